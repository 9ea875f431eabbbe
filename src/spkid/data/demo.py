"""The ``demo`` source: a seeded synthetic speaker corpus of real 16 kHz waveforms.

Every speaker is a parametric voice (f0 level and intonation range, jitter, shimmer, glottal
spectral tilt, breathiness, vocal-tract length, speaking rate and a personal formant offset per
vowel); every utterance is a random string of vowels, fricatives, stops and pauses rendered
through a source-filter model, then put through a random recording session (room, noise, EQ
tilt, gain), so that the channel varies per utterance while the voice stays the speaker's.

Layout written by :func:`generate`::

    out_dir/train/spk000/spk000_u000.wav    labelled training utterances
    out_dir/test/t0000.wav                  unlabelled test utterances, shuffled
    out_dir/test_labels.csv                 ``file,speaker``: the hidden answers

Each utterance is a pure function of ``(seed, speaker, index)``, so the corpus is
byte-identical whatever the number of worker processes.

Usage::

    python -m spkid.data.demo OUT_DIR --speakers 40 --seed 0
"""

import argparse
import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft, signal

from spkid.config import check

# Seed streams: the first words of every SeedSequence entropy, so that the speaker traits, the
# utterances and the test shuffle of one seed never share a random stream.
TRAITS_STREAM = 0
UTTERANCE_STREAM = 1
SHUFFLE_STREAM = 2

# Names and files.
SPEAKER_DIGITS = 3
UTTERANCE_DIGITS = 3
TEST_DIGITS = 4
WAV_SUBTYPE = "PCM_16"
LABELS_FILE = "test_labels.csv"
# Worker jobs per process handed out at once by the pool (fewer round trips).
JOBS_PER_WORKER_CHUNK = 4

# Vowels: Peterson & Barney (1952) average adult male F1-F3 (Hz); F4, F5 are shared.
VOWELS = ("iy", "ih", "eh", "ae", "ah", "aa", "ao", "uh", "uw", "er")
VOWEL_FORMANTS_HZ = np.array(
    [
        [270, 2290, 3010],
        [390, 1990, 2550],
        [530, 1840, 2480],
        [660, 1720, 2410],
        [520, 1190, 2390],
        [730, 1090, 2440],
        [570, 840, 2410],
        [440, 1020, 2240],
        [300, 870, 2240],
        [490, 1350, 1690],
    ],
    dtype=float,
)
HIGH_FORMANTS_HZ = np.array([3500.0, 4500.0])
# Formant bandwidths (Hz) for F1..F5 before the speaker's bandwidth scale.
FORMANT_BANDWIDTHS_HZ = np.array([70.0, 90.0, 130.0, 200.0, 250.0])
# The highest formant frequency allowed, as a fraction of the Nyquist frequency.
MAX_FORMANT_NYQUIST = 0.9

# Fricatives: noise band centre and width (Hz), and RMS level relative to a vowel.
FRICATIVES = ("s", "sh", "f")
FRICATIVE_BANDS_HZ = np.array([[5500.0, 3000.0], [3000.0, 1600.0], [4000.0, 5000.0]])
FRICATIVE_LEVELS = np.array([0.3, 0.3, 0.1])
# Stops: burst band centre and width (Hz); bursts decay with BURST_DECAY_S.
STOPS = ("p", "t", "k")
STOP_BANDS_HZ = np.array([[1000.0, 1200.0], [4000.0, 3000.0], [2000.0, 1500.0]])
BURST_LEVEL = 0.5
BURST_DECAY_S = 0.004
BAND_FILTER_ORDER = 2
# The highest band centre allowed, as a fraction of the Nyquist frequency.
MAX_BAND_CENTRE_NYQUIST = 0.9

# Phone durations (s) at speaking rate 1, drawn uniformly from these ranges.
VOWEL_SECONDS = (0.07, 0.20)
FRICATIVE_SECONDS = (0.06, 0.14)
CLOSURE_SECONDS = (0.02, 0.06)
BURST_SECONDS = (0.008, 0.02)
SHORT_PAUSE_SECONDS = (0.02, 0.08)
LONG_PAUSE_SECONDS = (0.15, 0.40)
# Word structure: syllables per word, onset / coda consonant probabilities, the share of
# stops among consonants, and the chance of a pause after a word (long or short).
SYLLABLES_PER_WORD = (1, 3)
ONSET_PROB = 0.7
CODA_PROB = 0.35
STOP_SHARE = 0.5
PAUSE_PROB = 0.4
LONG_PAUSE_SHARE = 0.5
# Per-vowel stress: log-normal RMS gain with this standard deviation (dB).
STRESS_DB = 3.0

# Synthesis: crossfade between phones, and a filter pre-roll so resonators start settled.
CROSSFADE_S = 0.012
PREROLL_S = 0.01
# Intonation: declination over the utterance (semitones, top to bottom), the number of random
# slow accents and their rate range (Hz), and the per-utterance f0 shift (semitones, SD).
DECLINATION_ST = 2.0
ACCENTS = 3
ACCENT_HZ = (0.4, 2.5)
UTTERANCE_F0_SHIFT_ST = 1.0
SEMITONES_PER_OCTAVE = 12.0
# Samples between the control points of the f0 contour.
CONTROL_STEP = 80

# Speaker traits. A latent body size in [0, 1] drives both f0 (log-uniform between the bounds)
# and the formant scale, each with its own spread, so the two correlate as in real voices.
F0_HZ = (85.0, 250.0)
F0_SPREAD_OCTAVES = 0.25
FORMANT_SCALE = (0.8, 1.25)
FORMANT_SCALE_SPREAD = 0.06
F0_RANGE_ST = (1.0, 4.0)
JITTER = (0.003, 0.02)
SHIMMER = (0.02, 0.12)
# Glottal source: radius of the double real pole of the glottal low-pass (higher = steeper).
GLOTTAL_POLE = (0.90, 0.985)
BREATHINESS = (0.03, 0.35)
RATE = (0.75, 1.3)
VOWEL_OFFSET_SD = 0.025
BANDWIDTH_SCALE_SD = 0.15
FRICATIVE_OFFSET_SD = 0.05

# Recording session, per utterance: a room impulse with this probability, reverberation time
# (s) and reverberant-to-direct amplitude; additive white or pink noise at an SNR (dB); a
# first-order EQ tilt ``1 - a z^-1`` with ``|a| <= EQ_TILT_MAX``; a channel colouring
# (below); the output peak level.
ROOM_PROB = 0.8
ROOM_RT60_S = (0.05, 0.4)
ROOM_REVERB_GAIN = (0.3, 1.5)
ROOM_PREDELAY_S = 0.002
RT60_DECAY_DB = 60.0
SNR_DB = (3.0, 25.0)
PINK_NOISE_PROB = 0.5
EQ_TILT_MAX = 0.8
# Channel colouring: peaking filters at centres in EQ_BAND_HZ, gains within +-EQ_BAND_GAIN_DB.
EQ_BANDS = 2
EQ_BAND_HZ = (150.0, 6000.0)
EQ_BAND_GAIN_DB = 6.0
EQ_BAND_Q = (0.7, 2.0)
PEAK = (0.1, 0.95)


@dataclass(frozen=True)
class DemoConfig:
    """Size and seed of a demo corpus.

    Args:
        n_speakers: number of speakers.
        train_per_speaker: labelled utterances per speaker.
        test_per_speaker: unlabelled test utterances per speaker.
        min_seconds: shortest utterance (s).
        max_seconds: longest utterance (s).
        sample_rate: sampling rate (Hz).
        seed: corpus seed; the same seed gives byte-identical files.
    """

    n_speakers: int = 40
    train_per_speaker: int = 24
    test_per_speaker: int = 6
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    sample_rate: int = 16000
    seed: int = 0

    def __post_init__(self):
        for name in ("n_speakers", "train_per_speaker", "sample_rate"):
            value = getattr(self, name)
            check(value > 0, f"demo.{name}", f"must be positive, got {value}")
        check(self.test_per_speaker >= 0, "demo.test_per_speaker", "must be >= 0")
        check(
            0 < self.min_seconds <= self.max_seconds,
            "demo.min_seconds",
            f"must be in (0, max_seconds = {self.max_seconds}], got {self.min_seconds}",
        )


@dataclass(frozen=True)
class Speaker:
    """The voice of one speaker.

    Args:
        f0_hz: mean fundamental frequency (Hz).
        f0_range_st: standard deviation of the intonation (semitones).
        jitter: cycle-to-cycle period variation, as a fraction of the period (SD).
        shimmer: cycle-to-cycle log-amplitude variation (SD).
        glottal_pole: radius of the glottal low-pass double pole (spectral tilt).
        breathiness: aspiration noise RMS relative to the voiced source.
        formant_scale: vocal-tract length factor multiplying all formant frequencies.
        rate: phone duration multiplier (above 1 = slower).
        vowel_offsets: personal factors on the vowel formants, shape (len(VOWELS), 5).
        bandwidth_scale: factor on all formant bandwidths.
        fricative_scale: factor on the fricative and burst band centres.
    """

    f0_hz: float
    f0_range_st: float
    jitter: float
    shimmer: float
    glottal_pole: float
    breathiness: float
    formant_scale: float
    rate: float
    vowel_offsets: np.ndarray
    bandwidth_scale: float
    fricative_scale: float


@dataclass(frozen=True)
class Phone:
    """One phone of an utterance.

    Args:
        kind: "vowel", "fricative", "stop" or "pause".
        index: row in the kind's table (VOWELS, FRICATIVES, STOPS); 0 for pauses.
        seconds: duration, speaking rate included (for stops: closure plus burst).
        gain: RMS level relative to a plain vowel.
        burst_seconds: the burst at the end of a stop; 0 for other kinds.
    """

    kind: str
    index: int
    seconds: float
    gain: float
    burst_seconds: float = 0.0


def draw_speaker(rng: np.random.Generator) -> Speaker:
    """Draw a speaker's voice.

    Args:
        rng: the speaker's generator.

    Returns:
        The speaker's traits.
    """
    size = rng.uniform()
    f0_octaves = np.log2(F0_HZ[1] / F0_HZ[0])
    f0_position = np.clip(size + rng.normal(0.0, F0_SPREAD_OCTAVES) / f0_octaves, 0.0, 1.0)
    scale = FORMANT_SCALE[0] + size * (FORMANT_SCALE[1] - FORMANT_SCALE[0])
    formant_scale = np.clip(scale + rng.normal(0.0, FORMANT_SCALE_SPREAD), *FORMANT_SCALE)
    n_formants = VOWEL_FORMANTS_HZ.shape[1] + HIGH_FORMANTS_HZ.size
    return Speaker(
        f0_hz=float(F0_HZ[0] * 2.0 ** (f0_position * f0_octaves)),
        f0_range_st=float(rng.uniform(*F0_RANGE_ST)),
        jitter=float(rng.uniform(*JITTER)),
        shimmer=float(rng.uniform(*SHIMMER)),
        glottal_pole=float(rng.uniform(*GLOTTAL_POLE)),
        breathiness=float(rng.uniform(*BREATHINESS)),
        formant_scale=float(formant_scale),
        rate=float(rng.uniform(*RATE)),
        vowel_offsets=np.exp(rng.normal(0.0, VOWEL_OFFSET_SD, (len(VOWELS), n_formants))),
        bandwidth_scale=float(np.exp(rng.normal(0.0, BANDWIDTH_SCALE_SD))),
        fricative_scale=float(formant_scale * np.exp(rng.normal(0.0, FRICATIVE_OFFSET_SD))),
    )


def draw_phones(speaker: Speaker, rng: np.random.Generator, seconds: float) -> list[Phone]:
    """Draw a random phone string: words of CV(C) syllables, some followed by pauses.

    Args:
        speaker: sets the speaking rate.
        rng: the utterance's generator.
        seconds: the string lasts at least this long.

    Returns:
        The phones, in order.
    """
    phones: list[Phone] = []
    total = 0.0
    while total < seconds:
        for _ in range(rng.integers(SYLLABLES_PER_WORD[0], SYLLABLES_PER_WORD[1] + 1)):
            if rng.uniform() < ONSET_PROB:
                phones.append(_consonant(speaker, rng))
            stress = float(10.0 ** (rng.normal(0.0, STRESS_DB) / 20.0))
            duration = rng.uniform(*VOWEL_SECONDS) * speaker.rate
            phones.append(Phone("vowel", int(rng.integers(len(VOWELS))), duration, stress))
            if rng.uniform() < CODA_PROB:
                phones.append(_consonant(speaker, rng))
        if rng.uniform() < PAUSE_PROB:
            span = LONG_PAUSE_SECONDS if rng.uniform() < LONG_PAUSE_SHARE else SHORT_PAUSE_SECONDS
            phones.append(Phone("pause", 0, rng.uniform(*span) * speaker.rate, 0.0))
        total = sum(phone.seconds for phone in phones)
    return phones


def _consonant(speaker: Speaker, rng: np.random.Generator) -> Phone:
    """Draw one fricative or stop at the speaker's rate."""
    if rng.uniform() < STOP_SHARE:
        closure = rng.uniform(*CLOSURE_SECONDS) * speaker.rate
        burst = rng.uniform(*BURST_SECONDS) * speaker.rate
        return Phone("stop", int(rng.integers(len(STOPS))), closure + burst, BURST_LEVEL, burst)
    index = int(rng.integers(len(FRICATIVES)))
    duration = rng.uniform(*FRICATIVE_SECONDS) * speaker.rate
    return Phone("fricative", index, duration, float(FRICATIVE_LEVELS[index]))


def f0_contour(speaker: Speaker, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """The utterance's f0 track: declination plus random slow accents around the speaker's f0.

    Args:
        speaker: f0 level and intonation range.
        rng: the utterance's generator.
        n: number of samples.
        sample_rate: Hz.

    Returns:
        f0 in Hz, shape (n,).
    """
    # The contour is slow: compute it at the control rate and interpolate.
    samples = np.arange(0, n + CONTROL_STEP, CONTROL_STEP)
    t = samples / sample_rate
    declination = DECLINATION_ST * (0.5 - samples / n)
    rates = rng.uniform(*ACCENT_HZ, ACCENTS)
    phases = rng.uniform(0.0, 2.0 * np.pi, ACCENTS)
    # Unit-variance sum of sinusoids, scaled to the speaker's range.
    accents = np.sqrt(2.0 / ACCENTS) * np.sin(2.0 * np.pi * np.outer(t, rates) + phases).sum(1)
    shift = rng.normal(0.0, UTTERANCE_F0_SHIFT_ST)
    semitones = declination + speaker.f0_range_st * accents + shift
    f0 = speaker.f0_hz * 2.0 ** (semitones / SEMITONES_PER_OCTAVE)
    return np.interp(np.arange(n), samples, f0)


def glottal_source(speaker: Speaker, rng: np.random.Generator, f0: np.ndarray) -> np.ndarray:
    """The voiced excitation: a jittered, shimmered pulse train through the glottal filter and
    lip radiation, plus pitch-synchronous aspiration noise.

    Args:
        speaker: jitter, shimmer, glottal tilt and breathiness.
        rng: the utterance's generator.
        f0: f0 in cycles per sample, shape (n,).

    Returns:
        The source, shape (n,).
    """
    n = f0.size
    phase = np.cumsum(f0)
    pulses = np.flatnonzero(np.diff(np.floor(phase))) + 1
    periods = 1.0 / f0[pulses]
    jittered = pulses + np.round(rng.normal(0.0, speaker.jitter, pulses.size) * periods)
    positions = np.clip(jittered.astype(int), 0, n - 1)
    train = np.zeros(n)
    np.add.at(train, positions, np.exp(rng.normal(0.0, speaker.shimmer, pulses.size)))
    pole = speaker.glottal_pole
    glottal = signal.lfilter([1.0], [1.0, -2.0 * pole, pole * pole], train)
    voiced = np.diff(glottal, prepend=0.0)
    breath = rng.standard_normal(n) * (0.5 + 0.5 * np.cos(2.0 * np.pi * phase))
    level = speaker.breathiness * _rms(voiced) / _rms(breath)
    return voiced + level * breath


def resonator_sos(freqs: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cascade of 2-pole resonators with unit gain at DC (Klatt 1980).

    Args:
        freqs: centre frequencies (Hz), shape (k,).
        bandwidths: bandwidths (Hz), shape (k,).
        sample_rate: Hz.

    Returns:
        Second-order sections for scipy.signal.sosfilt, shape (k, 6).
    """
    radius = np.exp(-np.pi * bandwidths / sample_rate)
    b = 2.0 * radius * np.cos(2.0 * np.pi * freqs / sample_rate)
    c = -radius * radius
    sos = np.zeros((freqs.size, 6))
    sos[:, 0] = 1.0 - b - c
    sos[:, 3] = 1.0
    sos[:, 4] = -b
    sos[:, 5] = -c
    return sos


def vowel_sos(speaker: Speaker, index: int, sample_rate: int) -> np.ndarray:
    """The speaker's vocal-tract filter for one vowel.

    Args:
        speaker: formant scale, personal offsets and bandwidth scale.
        index: row of VOWELS.
        sample_rate: Hz.

    Returns:
        Second-order sections, shape (5, 6).
    """
    base = np.concatenate([VOWEL_FORMANTS_HZ[index], HIGH_FORMANTS_HZ])
    freqs = base * speaker.formant_scale * speaker.vowel_offsets[index]
    freqs = np.minimum(freqs, MAX_FORMANT_NYQUIST * sample_rate / 2.0)
    return resonator_sos(freqs, FORMANT_BANDWIDTHS_HZ * speaker.bandwidth_scale, sample_rate)


def band_noise(
    rng: np.random.Generator, n: int, band: np.ndarray, scale: float, sample_rate: int
) -> np.ndarray:
    """White noise through a cascade of BAND_FILTER_ORDER identical 2-pole, 2-zero band-passes
    (zeros at DC and Nyquist).

    Args:
        rng: the utterance's generator.
        n: number of samples.
        band: (centre, width) in Hz, shape (2,).
        scale: factor on the centre (the speaker's fricative scale).
        sample_rate: Hz.

    Returns:
        The noise, shape (n,).
    """
    centre = min(band[0] * scale, MAX_BAND_CENTRE_NYQUIST * sample_rate / 2.0)
    section = resonator_sos(np.array([centre]), band[1:], sample_rate)
    section[:, :3] = [1.0, 0.0, -1.0]
    sos = np.repeat(section, BAND_FILTER_ORDER, axis=0)
    return signal.sosfilt(sos, rng.standard_normal(n))


def synthesize(speaker: Speaker, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Render a random utterance of the speaker, before any recording session.

    Each phone is rendered over its span plus half a crossfade either side (after a filter
    pre-roll), shaped by complementary raised-cosine ramps and overlap-added.

    Args:
        speaker: the voice.
        rng: the utterance's generator.
        n: number of samples.
        sample_rate: Hz.

    Returns:
        The clean waveform, shape (n,).
    """
    phones = draw_phones(speaker, rng, n / sample_rate)
    half = round(CROSSFADE_S * sample_rate / 2.0)
    preroll = round(PREROLL_S * sample_rate)
    bounds = np.round(np.cumsum([0.0] + [p.seconds for p in phones]) * sample_rate).astype(int)
    pad = half + preroll
    f0 = f0_contour(speaker, rng, bounds[-1] + 2 * pad, sample_rate)
    voiced = glottal_source(speaker, rng, f0 / sample_rate)
    ramp = np.sin(0.5 * np.pi * (np.arange(2 * half) + 0.5) / (2 * half)) ** 2
    out = np.zeros(bounds[-1] + 2 * half)
    for phone, start, stop in zip(phones, bounds[:-1], bounds[1:], strict=True):
        span = stop - start + 2 * half
        if phone.kind == "pause":
            continue
        if phone.kind == "vowel":
            sos = vowel_sos(speaker, phone.index, sample_rate)
            segment = signal.sosfilt(sos, voiced[start : stop + 2 * half + preroll])[preroll:]
            segment /= _rms(segment)
        elif phone.kind == "fricative":
            band = FRICATIVE_BANDS_HZ[phone.index]
            noise = band_noise(rng, span + preroll, band, speaker.fricative_scale, sample_rate)
            segment = noise[preroll:] / _rms(noise[preroll:])
        else:
            segment = _burst(speaker, rng, phone, span, half, sample_rate)
        window = np.ones(span)
        window[: 2 * half] = ramp
        window[-2 * half :] = ramp[::-1]
        out[start : start + span] += phone.gain * window * segment
    return out[half : half + n]


def _burst(
    speaker: Speaker, rng: np.random.Generator, phone: Phone, span: int, half: int, rate: int
) -> np.ndarray:
    """A stop over its rendered span: silence, then a decaying unit-RMS noise burst that ends
    where the stop does."""
    n_burst = round(phone.burst_seconds * rate)
    burst = band_noise(rng, n_burst, STOP_BANDS_HZ[phone.index], speaker.fricative_scale, rate)
    burst *= np.exp(-np.arange(n_burst) / (BURST_DECAY_S * rate))
    segment = np.zeros(span)
    segment[span - half - n_burst : span - half] = burst / _rms(burst)
    return segment


def record(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Put a clean utterance through a random recording session: maybe a room, additive
    white or pink noise at a random SNR, a random EQ tilt, a random channel colouring and a
    random peak level.

    Args:
        x: clean waveform, shape (n,).
        rng: the utterance's generator.
        sample_rate: Hz.

    Returns:
        The recorded waveform, shape (n,), peak below 1.
    """
    n = x.size
    if rng.uniform() < ROOM_PROB:
        x = signal.fftconvolve(x, room_impulse(rng, sample_rate))[:n]
    # Noise is drawn at an FFT-friendly length and cut to n.
    fast = fft.next_fast_len(n, real=True)
    noise = rng.standard_normal(fast)
    if rng.uniform() < PINK_NOISE_PROB:
        spectrum = fft.rfft(noise)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        spectrum[0] = 0.0
        noise = fft.irfft(spectrum, fast)
    noise = noise[:n]
    snr = rng.uniform(*SNR_DB)
    x = x + noise * _rms(x) / _rms(noise) * 10.0 ** (-snr / 20.0)
    x = signal.lfilter([1.0, -rng.uniform(-EQ_TILT_MAX, EQ_TILT_MAX)], [1.0], x)
    x = signal.sosfilt(channel_eq_sos(rng, sample_rate), x)
    return x * rng.uniform(*PEAK) / np.max(np.abs(x))


def channel_eq_sos(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A random channel colouring: EQ_BANDS peaking filters (RBJ cookbook) at log-uniform
    centres, with random gains and Qs.

    Args:
        rng: the utterance's generator.
        sample_rate: Hz.

    Returns:
        Second-order sections, shape (EQ_BANDS, 6).
    """
    low, high = np.log(EQ_BAND_HZ)
    omega = 2.0 * np.pi * np.exp(rng.uniform(low, high, EQ_BANDS)) / sample_rate
    amplitude = 10.0 ** (rng.uniform(-EQ_BAND_GAIN_DB, EQ_BAND_GAIN_DB, EQ_BANDS) / 40.0)
    alpha = np.sin(omega) / (2.0 * rng.uniform(*EQ_BAND_Q, EQ_BANDS))
    cos = -2.0 * np.cos(omega)
    b = np.stack([1.0 + alpha * amplitude, cos, 1.0 - alpha * amplitude], 1)
    a = np.stack([1.0 + alpha / amplitude, cos, 1.0 - alpha / amplitude], 1)
    return np.concatenate([b, a], 1) / a[:, :1]


def room_impulse(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A short synthetic room: the direct path, then exponentially decaying noise.

    Args:
        rng: the utterance's generator.
        sample_rate: Hz.

    Returns:
        The impulse response, shape (ROOM_RT60_S-drawn length in samples,).
    """
    n = round(rng.uniform(*ROOM_RT60_S) * sample_rate)
    t = np.arange(n) / n
    tail = rng.standard_normal(n) * 10.0 ** (-RT60_DECAY_DB * t / 20.0)
    tail[: round(ROOM_PREDELAY_S * sample_rate)] = 0.0
    h = rng.uniform(*ROOM_REVERB_GAIN) * tail / np.sqrt(np.sum(tail * tail))
    h[0] = 1.0
    return h


def utterance(cfg: DemoConfig, speaker: int, index: int) -> np.ndarray:
    """One recorded utterance, a pure function of (cfg.seed, speaker, index).

    Args:
        cfg: the corpus config.
        speaker: speaker number.
        index: utterance number within the speaker (train first, then test).

    Returns:
        The waveform, shape (n,), min_seconds <= n / sample_rate <= max_seconds.
    """
    voice = draw_speaker(np.random.default_rng([cfg.seed, TRAITS_STREAM, speaker]))
    rng = np.random.default_rng([cfg.seed, UTTERANCE_STREAM, speaker, index])
    n = int(rng.uniform(cfg.min_seconds, cfg.max_seconds) * cfg.sample_rate)
    return record(synthesize(voice, rng, n, cfg.sample_rate), rng, cfg.sample_rate)


def speaker_name(speaker: int) -> str:
    """The directory and label of a speaker number, e.g. ``spk007``."""
    return f"spk{speaker:0{SPEAKER_DIGITS}d}"


def _write(job: tuple[DemoConfig, int, int, str]) -> int:
    """Synthesise and write one utterance; returns its number of samples."""
    cfg, speaker, index, path = job
    x = utterance(cfg, speaker, index)
    sf.write(path, x, cfg.sample_rate, subtype=WAV_SUBTYPE)
    return x.size


def generate(out_dir, cfg: DemoConfig, workers: int | None = None) -> dict:
    """Write a demo corpus (layout in the module docstring).

    Args:
        out_dir: target folder; must be absent or empty.
        cfg: corpus size and seed.
        workers: worker processes; None uses os.cpu_count(). The files do not depend on it.

    Returns:
        Counts: ``speakers``, ``train`` and ``test`` utterances, and total ``seconds``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty")
    per_speaker = cfg.train_per_speaker + cfg.test_per_speaker
    n_test = cfg.n_speakers * cfg.test_per_speaker
    order = np.random.default_rng([cfg.seed, SHUFFLE_STREAM]).permutation(n_test)
    jobs, labels = [], []
    (out / "test").mkdir(parents=True)
    for speaker in range(cfg.n_speakers):
        name = speaker_name(speaker)
        (out / "train" / name).mkdir(parents=True)
        for index in range(per_speaker):
            if index < cfg.train_per_speaker:
                path = out / "train" / name / f"{name}_u{index:0{UTTERANCE_DIGITS}d}.wav"
            else:
                slot = order[speaker * cfg.test_per_speaker + index - cfg.train_per_speaker]
                path = out / "test" / f"t{slot:0{TEST_DIGITS}d}.wav"
                labels.append((path.name, name))
            jobs.append((cfg, speaker, index, str(path)))
    with open(out / LABELS_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "speaker"])
        writer.writerows(sorted(labels))
    workers = workers or os.cpu_count()
    chunk = max(1, len(jobs) // (workers * JOBS_PER_WORKER_CHUNK))
    with ProcessPoolExecutor(workers) as pool:
        samples = sum(pool.map(_write, jobs, chunksize=chunk))
    return {
        "speakers": cfg.n_speakers,
        "train": cfg.n_speakers * cfg.train_per_speaker,
        "test": n_test,
        "seconds": samples / cfg.sample_rate,
    }


def _rms(x: np.ndarray) -> float:
    """Root mean square, floored so that silence does not divide by zero."""
    return float(np.sqrt(np.mean(x * x)) + np.finfo(float).tiny)


def main(argv: list[str] | None = None) -> None:
    """Command line: write a demo corpus and print its counts as JSON."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="target folder (absent or empty)")
    parser.add_argument("--speakers", type=int, default=defaults.n_speakers)
    parser.add_argument("--train-per-speaker", type=int, default=defaults.train_per_speaker)
    parser.add_argument("--test-per-speaker", type=int, default=defaults.test_per_speaker)
    parser.add_argument("--min-seconds", type=float, default=defaults.min_seconds)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--sample-rate", type=int, default=defaults.sample_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=None, help="default: all CPU cores")
    args = parser.parse_args(argv)
    cfg = DemoConfig(
        n_speakers=args.speakers,
        train_per_speaker=args.train_per_speaker,
        test_per_speaker=args.test_per_speaker,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        sample_rate=args.sample_rate,
        seed=args.seed,
    )
    print(json.dumps(generate(args.out_dir, cfg, args.workers)))


if __name__ == "__main__":
    main()
