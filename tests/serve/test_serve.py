import base64
import io

import numpy as np
import soundfile
from bench.serve import audio_payload, post, serving

from spkid import tracking
from tests.conftest import clean_env


def wav_bytes(seconds: float) -> str:
    buffer = io.BytesIO()
    wave = 0.3 * np.random.default_rng(0).standard_normal(int(16000 * seconds))
    soundfile.write(buffer, wave, 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


BAD = {
    "not audio": ({"audio": base64.b64encode(b"plain text").decode()}, "unreadable audio"),
    "0.05 s clip": ({"audio": wav_bytes(0.05)}, "too short"),
    "wrong feature width": ({"features": np.zeros((50, 13)).tolist()}, "need (frames, 40)"),
    "unreadable path": ({"audio": "/no/such/clip.wav"}, "no such file"),
}


def test_the_champion_served_names_the_speaker_and_refuses_bad_requests(
    trained, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    rows = [{"tier": "simple", "top1": 1.0, "parameters": 1}]
    tracking.register_champion(
        trained.root, "spkid", "spkid", rows, {"simple": trained.knowing_run_id}
    )
    env = {**clean_env(), "MLFLOW_TRACKING_URI": trained.uri}
    path, speaker = next(iter(sorted(trained.labels.items())))
    with (
        open(tmp_path / "server.log", "w") as log,
        serving("models:/spkid@champion", env, log) as url,
    ):
        status, body = post(url, audio_payload(path, top_k=3))
        assert status == 200, body
        answer = body["predictions"][0]
        assert answer["speaker"] == speaker
        assert len(answer["top_k_speakers"]) == 3
        for kind, (record, reason) in BAD.items():
            status, body = post(url, {"dataframe_records": [record]})
            assert 400 <= status < 500, (kind, status, body)
            assert reason in body["message"], (kind, body["message"][-300:])
        status, body = post(url, audio_payload(path))  # still answering
        assert status == 200 and body["predictions"][0]["speaker"] == speaker
