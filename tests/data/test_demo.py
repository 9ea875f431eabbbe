"""The demo corpus generator: determinism, layout, audio sanity and speaker traits."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from spkid.data import demo

TINY = demo.DemoConfig(
    n_speakers=3, train_per_speaker=2, test_per_speaker=2, min_seconds=0.5, max_seconds=1.0
)
# f0 estimation: frame and hop (s), the searched f0 range (Hz), the share of the loudest
# frames kept, and the normalised autocorrelation a frame needs to count as voiced.
FRAME_S = 0.04
HOP_S = 0.02
F0_SEARCH_HZ = (60.0, 400.0)
LOUD_SHARE = 0.3
VOICED_CORRELATION = 0.5
# Two voices that differ in f0 only, and how many utterances of each are measured.
LOW_F0_HZ = 100.0
HIGH_F0_HZ = 200.0
UTTERANCES_PER_VOICE = 4
# A file counts as not silent above this RMS.
MIN_RMS = 1e-3


def _files(root):
    """Every file under root, by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The TINY corpus written with two workers, and the counts generate returned."""
    root = tmp_path_factory.mktemp("demo") / "corpus"
    return root, demo.generate(root, TINY, workers=2)


def test_same_seed_is_byte_identical_whatever_the_workers(corpus, tmp_path):
    root, _ = corpus
    demo.generate(tmp_path / "again", TINY, workers=1)
    assert _files(tmp_path / "again") == _files(root)


def test_other_seed_differs(corpus, tmp_path):
    root, _ = corpus
    demo.generate(tmp_path / "other", dataclasses.replace(TINY, seed=1), workers=2)
    ours, theirs = _files(root), _files(tmp_path / "other")
    wavs = [name for name in ours if name.endswith(".wav")]
    assert set(ours) == set(theirs)
    assert all(ours[name] != theirs[name] for name in wavs)


def test_layout_and_counts(corpus):
    root, counts = corpus
    speakers = [demo.speaker_name(i) for i in range(TINY.n_speakers)]
    assert counts["speakers"] == TINY.n_speakers
    assert counts["train"] == TINY.n_speakers * TINY.train_per_speaker
    assert counts["test"] == TINY.n_speakers * TINY.test_per_speaker
    assert sorted(p.name for p in (root / "train").iterdir()) == speakers
    for name in speakers:
        files = sorted((root / "train" / name).iterdir())
        assert len(files) == TINY.train_per_speaker
        assert all(f.name.startswith(f"{name}_") and f.suffix == ".wav" for f in files)
    assert len(list((root / "test").iterdir())) == counts["test"]
    seconds = sum(sf.info(p).duration for p in root.rglob("*.wav"))
    assert counts["seconds"] == pytest.approx(seconds)


def test_audio_is_16k_mono_in_range_and_not_silent(corpus):
    root, _ = corpus
    for path in root.rglob("*.wav"):
        info = sf.info(path)
        assert info.samplerate == TINY.sample_rate
        assert info.channels == 1
        assert TINY.min_seconds <= info.duration <= TINY.max_seconds
        x, _ = sf.read(path)
        assert np.max(np.abs(x)) <= 1.0
        assert np.sqrt(np.mean(x * x)) > MIN_RMS


def test_test_names_hide_speakers_and_labels_cover_them(corpus):
    root, _ = corpus
    names = sorted(p.name for p in (root / "test").iterdir())
    speakers = [demo.speaker_name(i) for i in range(TINY.n_speakers)]
    assert not any(s in n for n in names for s in speakers)
    with open(root / demo.LABELS_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == names
    assert sorted(r["speaker"] for r in rows) == sorted(speakers * TINY.test_per_speaker)


def test_refuses_a_non_empty_folder(corpus):
    root, _ = corpus
    with pytest.raises(FileExistsError):
        demo.generate(root, TINY, workers=1)


def test_main_writes_and_prints_counts(tmp_path, capsys):
    demo.main(
        [str(tmp_path / "cli"), "--speakers", "2", "--train-per-speaker", "1"]
        + ["--test-per-speaker", "1", "--min-seconds", "0.5", "--max-seconds", "0.6"]
        + ["--workers", "1"]
    )
    counts = json.loads(capsys.readouterr().out)
    assert (counts["speakers"], counts["train"], counts["test"]) == (2, 2, 2)
    assert len(list((tmp_path / "cli").rglob("*.wav"))) == 4


def _median_f0(x, sample_rate):
    """Median f0 (Hz) over the loud, clearly periodic frames, by normalised autocorrelation.

    Args:
        x: waveform, shape (n,).
        sample_rate: Hz.
    """
    frame, hop = round(FRAME_S * sample_rate), round(HOP_S * sample_rate)
    starts = np.arange(0, x.size - frame, hop)
    frames = x[starts[:, None] + np.arange(frame)]
    frames = frames - frames.mean(1, keepdims=True)
    energy = np.sum(frames * frames, 1)
    loud = frames[energy >= np.quantile(energy, 1.0 - LOUD_SHARE)]
    spectrum = np.fft.rfft(loud, 2 * frame)
    correlation = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]
    correlation /= correlation[:, :1]
    lags = np.arange(round(sample_rate / F0_SEARCH_HZ[1]), round(sample_rate / F0_SEARCH_HZ[0]))
    best = lags[np.argmax(correlation[:, lags], 1)]
    voiced = correlation[np.arange(len(best)), best] > VOICED_CORRELATION
    return float(np.median(sample_rate / best[voiced]))


def test_speakers_differ_in_f0_more_than_within():
    """Two voices differing in f0 alone, measured on the voice before the recording session
    (whose low-SNR narrow-band noise can fool a plain autocorrelation tracker)."""
    base = demo.draw_speaker(np.random.default_rng(0))
    sr, n = TINY.sample_rate, round(TINY.max_seconds * TINY.sample_rate)
    medians = {}
    for f0 in (LOW_F0_HZ, HIGH_F0_HZ):
        voice = dataclasses.replace(base, f0_hz=f0)
        rngs = [np.random.default_rng([round(f0), i]) for i in range(UTTERANCES_PER_VOICE)]
        medians[f0] = np.array([_median_f0(demo.synthesize(voice, r, n, sr), sr) for r in rngs])
    low, high = medians[LOW_F0_HZ], medians[HIGH_F0_HZ]
    within = max(np.ptp(low), np.ptp(high))
    assert np.median(high) - np.median(low) > 2.0 * within
    assert np.median(low) == pytest.approx(LOW_F0_HZ, rel=0.2)
    assert np.median(high) == pytest.approx(HIGH_F0_HZ, rel=0.2)


def test_utterance_is_a_pure_function_of_seed_speaker_and_index():
    first = demo.utterance(TINY, 1, 0)
    assert np.array_equal(first, demo.utterance(TINY, 1, 0))
    assert not np.array_equal(first[:100], demo.utterance(TINY, 1, 1)[:100])
    assert TINY.min_seconds <= first.size / TINY.sample_rate <= TINY.max_seconds
