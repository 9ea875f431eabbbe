"""Requests per second of `mlflow models serve` answering one 3 s clip per request.

    PYTHONPATH=src:. python bench/serve.py --model models:/spkid@champion [--seconds 30]

The server runs as README.md shows it (local env, one worker); one client posts the same
base64 WAV (a demo utterance of CLIP_SECONDS) back to back, after WARMUP requests. The helpers
also start the server for tests/serve/test_serve.py.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from spkid.atomic import write_json

READY_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict) -> tuple:
    """(HTTP status, decoded JSON body) of POSTing ``payload`` as JSON."""
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def audio_payload(path, top_k: int = 5) -> dict:
    """The scoring protocol's request for one audio file, base64-encoded."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return {"dataframe_records": [{"audio": data}], "params": {"top_k": top_k}}


@contextmanager
def serving(model_uri: str, env: dict, log):
    """Yield the /invocations URL of ``mlflow models serve -m model_uri`` (local env)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping").close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the model server did not start: {cmd}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        server.terminate()
        server.wait(timeout=30)


CLIP_SECONDS = 3.0
WARMUP = 5


def demo_clip(path) -> None:
    """A demo utterance of exactly CLIP_SECONDS at 16 kHz, written to ``path``."""
    import soundfile

    from spkid.data.demo import WAV_SUBTYPE, DemoConfig, utterance

    cfg = DemoConfig(min_seconds=CLIP_SECONDS, max_seconds=CLIP_SECONDS)
    soundfile.write(path, utterance(cfg, 0, 0), cfg.sample_rate, subtype=WAV_SUBTYPE)


def rate(url: str, payload: dict, seconds: float) -> dict:
    """Post ``payload`` back to back for ``seconds``: requests, seconds, requests/s."""
    for _ in range(WARMUP):
        post(url, payload)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        status, body = post(url, payload)
        if status != 200:
            raise RuntimeError(f"the server answered {status}: {body}")
        count += 1
    elapsed = time.perf_counter() - start
    return {
        "requests": count,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(count / elapsed, 2),
    }


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--model", default="models:/spkid@champion")
    args.add_argument("--seconds", type=float, default=30.0)
    args.add_argument("--out", default="reports/bench/serve.json")
    args = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.wav"
        demo_clip(clip)
        with (
            open(Path(tmp) / "server.log", "w") as log,
            serving(args.model, dict(os.environ), log) as url,
        ):
            result = {
                "model": args.model,
                "clip_seconds": CLIP_SECONDS,
                "cores": os.cpu_count(),
                **rate(url, audio_payload(clip), args.seconds),
            }
    write_json(args.out, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
