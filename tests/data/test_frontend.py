"""Tests of the course front end: torchaudio log-mel, peak norm, sox's silence rule, errors."""

import functools
import math
import pickle
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from spkid.data.errors import InputError
from spkid.data.frontend import (
    FrontEnd,
    audio_features,
    log_mel,
    peak_normalize,
    read_audio,
    trim_silence,
    wav2mel,
)

RATE = 16000
WINDOW = RATE // 50  # sox's RMS window: 320 samples
DURATION = RATE // 10  # 0.1 s: 1600 samples
THRESHOLD = 1.0  # percent
LOUD = 0.5  # square-wave amplitude (RMS 50 %): loud from its first sample on
TAIL = WINDOW - 1  # zeros after a LOUD square that are still loud: the window holds loud samples
PEAK = 10 ** (-3 / 20)  # -3 dBFS
LOG_FLOOR = math.log(1e-9)
STRONG_RANGE = math.log(1e6)  # compare closely the log-mel bins within 60 dB of the top
SOX_EFFECTS = ["channels", "1", "rate", "16000", "norm", "-3.0"]
SOX_EFFECTS += ["silence", "1", "0.1", "1%", "-1", "0.1", "1%"]

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")


def _square(n: int, amplitude: float = LOUD) -> np.ndarray:
    """A square wave at the Nyquist rate: every sample has magnitude ``amplitude``."""
    return amplitude * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def _trim(*parts: np.ndarray) -> np.ndarray:
    """The course's silence rule on the concatenated parts, at 16 kHz."""
    return trim_silence(np.concatenate(parts), RATE, THRESHOLD, DURATION / RATE)


def _sox_silence_reference(wave: np.ndarray) -> np.ndarray:
    """sox silence.c's state machine, one sample at a time (slow: short signals only)."""
    window, slot, total = [0.0] * WINDOW, 0, 0.0
    kept, held, copying = [], [], False
    for sample in wave.tolist():
        total += sample * sample - window[slot]
        window[slot], slot = sample * sample, (slot + 1) % WINDOW
        loud = math.sqrt(max(total, 0.0) / WINDOW) * 100 > THRESHOLD
        held.append(sample)
        if copying and loud:
            kept, held = kept + held, []
        elif not copying and not loud:
            held = []
        elif len(held) >= DURATION and copying:  # 0.1 s of quiet: drop it and restart
            window, slot, total, held, copying = [0.0] * WINDOW, 0, 0.0, [], False
        elif len(held) >= DURATION:  # 0.1 s of loud: speech starts
            kept, held, copying = kept + held, [], True
    return np.array(kept + held if copying else kept)


def _piecewise(seed: int, samples: int) -> np.ndarray:
    """Random stretches of silence, tones and noise, several near the 1 % RMS threshold."""
    rng = np.random.default_rng(seed)
    levels = [0.0, 0.005, 0.0099, 0.01, 0.0101, 0.02, 0.15]
    parts, total = [], 0
    while total < samples:
        n = int(rng.integers(1, 5000))
        tone = np.sqrt(2) * np.sin(np.arange(n) * rng.uniform(0.05, 2.0))
        shape = rng.standard_normal(n) if rng.random() < 0.5 else tone
        parts.append(rng.choice(levels) * shape)
        total += n
    return np.concatenate(parts)[:samples].astype(np.float32)


def _gappy_tones(rate: int) -> np.ndarray:
    """Tones separated by silences of 0.05 to 0.5 s, a lone 0.05 s burst, silent ends."""
    second = np.arange(rate) / rate
    pieces = [np.zeros(int(0.3 * rate))]
    for frequency, gap_s in [(220, 0.05), (440, 0.099), (660, 0.1), (330, 0.15), (880, 0.5)]:
        pieces += [0.4 * np.sin(2 * np.pi * frequency * second[: int(0.3 * rate)])]
        pieces += [np.zeros(int(gap_s * rate))]
    pieces += [0.4 * np.sin(2 * np.pi * 500 * second[: int(0.05 * rate)])]  # lone burst
    pieces += [np.zeros(int(0.4 * rate)), 0.3 * np.sin(2 * np.pi * 300 * second[: rate // 2])]
    pieces += [np.zeros(int(0.08 * rate))]
    return np.concatenate(pieces).astype(np.float32)


def _near_threshold_noise() -> np.ndarray:
    """Noise at RMS 0.9 % to 1.2 % of -3 dBFS-normalised full scale, between loud stretches."""
    rng = np.random.default_rng(7)
    pieces = [_square(4000, PEAK)]
    for rms in [0.009, 0.0099, 0.0101, 0.011, 0.012, 0.0095]:
        pieces += [rms * rng.standard_normal(3000), 0.3 * rng.standard_normal(2500).clip(-2, 2)]
    return np.concatenate(pieces).astype(np.float32)


def _run_sox(source, target) -> np.ndarray:
    """The course's sox chain on a file; returns the output samples, shape (samples,)."""
    command = ["sox", "-V1", "-D", str(source), "-e", "floating-point", "-b", "32", str(target)]
    subprocess.run(command + SOX_EFFECTS, check=True)
    return soundfile.read(target, dtype="float32")[0]


def _assert_strong_bins_close(ours: np.ndarray, reference: np.ndarray, atol: float) -> None:
    """Log-mel bins within 60 dB of the reference's top agree within atol.

    Bins far below that hold only window leakage, where float rounding decides the value.
    """
    strong = reference > reference.max() - STRONG_RANGE
    np.testing.assert_allclose(ours[strong], reference[strong], atol=atol)


# ---------------------------------------------------------------- log-mel and peak norm


@pytest.mark.parametrize("samples", [201, 400, 16000, 16159, 16160, 19763])
def test_log_mel_equals_torchaudio(samples):
    wave = np.random.default_rng(samples).uniform(-0.5, 0.5, samples).astype(np.float32)
    mel = torchaudio.transforms.MelSpectrogram(
        16000, n_fft=400, hop_length=160, f_min=50, n_mels=40
    )
    expected = torch.log(torch.clamp(mel(torch.from_numpy(wave)).T, min=1e-9))
    ours = log_mel(wave, FrontEnd())
    assert ours.dtype == torch.float32
    assert ours.shape == (1 + samples // 160, 40)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_log_mel_of_too_short_wave_has_no_frames():
    assert log_mel(np.ones(200, dtype=np.float32), FrontEnd()).shape == (0, 40)


@pytest.mark.parametrize("scale", [0.01, 0.9, 3.0])
def test_peak_normalize_puts_peak_at_minus_3_dbfs(scale):
    wave = (scale * np.random.default_rng(0).standard_normal((5000, 2))).astype(np.float32)
    wave[123, 1] = -4 * scale  # the peak is negative
    out = peak_normalize(wave, -3.0)
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert np.abs(out).max() == pytest.approx(PEAK, rel=1e-6)
    assert out[123, 1] == pytest.approx(-PEAK, rel=1e-6)
    np.testing.assert_allclose(out / PEAK, wave / np.abs(wave).max(), rtol=1e-5, atol=1e-7)


def test_peak_normalize_leaves_silence_alone():
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(peak_normalize(np.zeros(100, np.float32), -3.0), 0.0)


# ---------------------------------------------------------------- the silence rule


def test_leading_silence_and_quiet_noise_trimmed():
    loud = _square(4000)
    np.testing.assert_array_equal(_trim(np.zeros(5000), loud), loud)
    np.testing.assert_array_equal(_trim(_square(3000, 0.0099), loud), loud)


def test_barely_loud_start_waits_for_the_window_to_fill():
    # A 1.01 % square is loud once k samples fill the (zeroed) window: k > 320 / 1.0201,
    # so its first 313 samples are quiet.
    wave = np.concatenate([_square(3000, 0.0101), _square(4000)])
    np.testing.assert_array_equal(_trim(wave), wave[313:])


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (800, 4000 + 800 + 3000),  # 0.05 s: kept
        (1500, 4000 + 1500 + 3000),  # shorter than 0.1 s: kept
        (TAIL + DURATION - 1, 4000 + TAIL + DURATION - 1 + 3000),  # 1599 quiet samples: kept
        (TAIL + DURATION, 4000 + TAIL + 3000),  # 1600 quiet samples: removed
        (8000, 4000 + TAIL + 3000),  # 0.5 s: removed
    ],
)
def test_inner_silence_removed_only_when_longer_than_duration(gap, expected):
    # The first TAIL zeros after a loud stretch are still loud (the RMS window holds loud
    # samples), so sox keeps them and a gap is quiet for gap - TAIL samples.
    out = _trim(_square(4000), np.zeros(gap), _square(3000))
    assert len(out) == expected
    np.testing.assert_array_equal(out[:4000], _square(4000))


@pytest.mark.parametrize(
    ("burst", "expected"),
    [
        (800, 4000 + TAIL + 3000),  # 0.05 s burst: dropped
        (DURATION - TAIL - 1, 4000 + TAIL + 3000),  # loud for 1599 samples: dropped
        (DURATION - TAIL, 4000 + TAIL + DURATION + 3000),  # loud for 1600: kept with its tail
    ],
)
def test_short_burst_after_long_silence_dropped(burst, expected):
    quiet = np.zeros(8000)
    assert len(_trim(_square(4000), quiet, _square(burst), quiet, _square(3000))) == expected


@pytest.mark.parametrize(
    ("tail", "expected"),
    [(1000, 5000), (TAIL + DURATION - 1, 4000 + TAIL + DURATION - 1), (5000, 4000 + TAIL)],
)
def test_trailing_silence_kept_only_when_short(tail, expected):
    out = _trim(_square(4000), np.zeros(tail))
    assert len(out) == expected


def _restart_onto_a_barely_loud_square(loud: float = LOUD) -> np.ndarray:
    """Loud, then 0.9 % for exactly long enough to restart, then 1.05 %."""
    parts = [_square(4000, loud), _square(TAIL + DURATION, 0.009), _square(4000, 0.0105)]
    return np.concatenate(parts)


def test_restart_clears_the_rms_window():
    # 0.9 % after 4000 loud samples turns quiet at its 320th sample; 1600 quiet samples later
    # (at 1919) the effect restarts with a zeroed window, right where a 1.05 % square starts.
    # With the window cleared that square is quiet until 291 of its samples fill it
    # (k > 320 / 1.1025); had the 0.9 % samples stayed in the window it would be loud from
    # its 21st sample.
    wave = _restart_onto_a_barely_loud_square()
    middle = 4000 + TAIL + DURATION
    expected = np.concatenate([wave[: 4000 + TAIL], wave[middle + 290 :]])
    np.testing.assert_array_equal(_trim(wave), expected)


def test_silence_and_lone_short_sounds_give_nothing():
    assert _trim(np.zeros(20000)).shape == (0,)
    assert _trim(np.zeros(5000), _square(1000), np.zeros(5000)).shape == (0,)
    assert _trim(np.zeros(5000), _square(DURATION - 1)).shape == (0,)
    assert _trim(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("seed", range(6))
def test_trim_silence_equals_sample_by_sample_state_machine(seed):
    wave = _piecewise(seed, 20000).astype(np.float64)
    np.testing.assert_array_equal(_trim(wave), _sox_silence_reference(wave))


# ---------------------------------------------------------------- sox as the oracle


@needs_sox
@pytest.mark.parametrize(
    "make_wave",
    [
        functools.partial(_gappy_tones, RATE),
        _near_threshold_noise,
        functools.partial(_restart_onto_a_barely_loud_square, PEAK),
        *[functools.partial(_piecewise, seed, 3 * RATE) for seed in range(10, 14)],
    ],
    ids=["gappy_tones", "near_threshold", "restart", *[f"piecewise{s}" for s in range(10, 14)]],
)
def test_sox_oracle_16k_mono(tmp_path, make_wave):
    wave = make_wave().astype(np.float32)
    soundfile.write(tmp_path / "in.wav", wave, RATE, subtype="FLOAT")
    reference = _run_sox(tmp_path / "in.wav", tmp_path / "out.wav")
    ours = trim_silence(peak_normalize(wave, -3.0), RATE, THRESHOLD, DURATION / RATE)
    assert len(ours) == len(reference)  # every sample kept or dropped as sox does
    np.testing.assert_allclose(ours, reference, atol=1e-6)  # sox's int32 round trip
    frames = wav2mel(*read_audio(tmp_path / "in.wav"), FrontEnd())
    reference_frames = log_mel(reference, FrontEnd()).numpy()
    assert frames.shape == reference_frames.shape
    _assert_strong_bins_close(frames, reference_frames, atol=1e-3)


@needs_sox
def test_sox_oracle_44k_stereo(tmp_path):
    # sox resamples with its own filter, we with torchaudio's: lengths and values differ a bit.
    rate = 44100
    tones = _gappy_tones(rate)
    noise = 0.05 * np.random.default_rng(3).standard_normal(len(tones)) * (tones != 0)
    wave = np.stack([tones, 0.5 * tones + noise], axis=1)
    wave[: int(0.3 * rate)] = 0.0
    soundfile.write(tmp_path / "in.wav", wave.astype(np.float32), rate, subtype="FLOAT")
    reference = log_mel(_run_sox(tmp_path / "in.wav", tmp_path / "out.wav"), FrontEnd()).numpy()
    frames = wav2mel(*read_audio(tmp_path / "in.wav"), FrontEnd())
    assert abs(len(frames) - len(reference)) <= 1
    common = min(len(frames), len(reference))
    difference = np.abs(frames[:common] - reference[:common])
    assert np.median(difference) < 0.05
    assert difference.mean() < 0.15


# ---------------------------------------------------------------- wav2mel


def test_wav2mel_averages_channels():
    tone = (0.3 * np.sin(np.arange(RATE) * 0.2)).astype(np.float32)
    same = wav2mel(np.stack([tone, tone], axis=1), RATE, FrontEnd())
    np.testing.assert_array_equal(same, wav2mel(tone[:, None], RATE, FrontEnd()))
    assert wav2mel(np.stack([tone, -tone], axis=1), RATE, FrontEnd()).shape == (0, 40)


def test_wav2mel_resamples_to_16k():
    tone = (0.3 * np.sin(np.arange(8000) * 0.2)).astype(np.float32)[:, None]
    frames = wav2mel(tone, 8000, FrontEnd(trim_silence=False))
    assert frames.shape == (1 + 16000 // 160, 40)


def test_wav2mel_untrimmed_is_log_mel_of_normalised_wave():
    wave = _piecewise(1, 12345)
    frames = wav2mel(wave[:, None], RATE, FrontEnd(trim_silence=False))
    expected = log_mel(peak_normalize(wave, -3.0), FrontEnd()).numpy()
    assert frames.dtype == np.float32 and frames.shape == (1 + 12345 // 160, 40)
    np.testing.assert_array_equal(frames, expected)


def test_wav2mel_of_silence_does_not_divide_by_zero():
    silence = np.zeros((RATE, 2), np.float32)
    with np.errstate(all="raise"):
        assert wav2mel(silence, RATE, FrontEnd()).shape == (0, 40)
        untrimmed = wav2mel(silence, RATE, FrontEnd(trim_silence=False))
    assert untrimmed.shape == (101, 40)
    np.testing.assert_allclose(untrimmed, LOG_FLOOR, rtol=1e-6)


# ---------------------------------------------------------------- files and errors


def test_front_end_settings():
    settings = FrontEnd().as_dict()
    assert settings == {
        "sample_rate": 16000,
        "norm_db": -3.0,
        "silence_threshold": 1.0,
        "silence_duration": 0.1,
        "n_fft": 400,
        "hop_length": 160,
        "f_min": 50.0,
        "n_mels": 40,
        "trim_silence": True,
        "min_frames": 1,
    }


def test_audio_features_reads_and_transforms(tmp_path):
    wave = _gappy_tones(RATE)
    soundfile.write(tmp_path / "a.wav", wave, RATE, subtype="PCM_16")
    read, rate = read_audio(tmp_path / "a.wav")
    assert read.dtype == np.float32 and read.shape == (len(wave), 1) and rate == RATE
    features = functools.partial(audio_features, fe=FrontEnd())
    frames = pickle.loads(pickle.dumps(features))(tmp_path / "a.wav")  # fit for multiprocessing
    np.testing.assert_array_equal(frames, wav2mel(read, rate, FrontEnd()))
    assert frames.dtype == np.float32 and frames.shape[1] == 40


def _empty(path):
    soundfile.write(path, np.zeros((0, 1), np.float32), RATE)


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(1000))


def _header_only(path):
    soundfile.write(path, np.full(RATE, 0.5, np.float32), RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:44])


def _not_finite(path):
    wave = np.full(RATE, 0.5, np.float32)
    wave[100] = np.nan
    soundfile.write(path, wave, RATE, subtype="FLOAT")


def _missing(path):
    """Leaves no file at path."""


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        (_empty, "empty"),
        (_random_bytes, "unreadable"),
        (_header_only, "empty"),  # libsndfile reads a header without data as 0 samples
        (_not_finite, "non-finite"),
        (_missing, "unreadable"),
    ],
)
def test_bad_files_raise_input_error_naming_them(tmp_path, make_file, reason):
    path = tmp_path / "bad.wav"
    make_file(path)
    with pytest.raises(InputError, match=re.escape(str(path))) as raised:
        audio_features(path, FrontEnd())
    assert raised.value.path == str(path)
    assert re.search(reason, raised.value.reason)


def test_all_silence_is_too_short(tmp_path):
    path = tmp_path / "silent.wav"
    soundfile.write(path, np.zeros((RATE, 2), np.float32), RATE)
    with pytest.raises(InputError, match=re.escape(str(path))) as raised:
        audio_features(path, FrontEnd())
    assert raised.value.reason == "too short after silence trimming: 0 frames < 1"


def test_min_frames(tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(path, _square(RATE // 2).astype(np.float32), RATE, subtype="FLOAT")
    assert audio_features(path, FrontEnd(min_frames=51)).shape == (51, 40)
    with pytest.raises(InputError, match=r"short\.wav: too short .*: 51 frames < 52"):
        audio_features(path, FrontEnd(min_frames=52))
