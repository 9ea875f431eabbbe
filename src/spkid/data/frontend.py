"""The course front end: audio file to log-mel frames, as the ML2022 HW4 features were made.

The chain is yistLin/dvector's ``wav2mel``: mono, 16 kHz, peak normalised to -3 dBFS, sox
``silence 1 0.1 1% -1 0.1 1%`` (drop silences longer than 0.1 s anywhere), then a 40-band
log-mel spectrogram with 25 ms windows and a 10 ms hop. torchaudio no longer ships sox
effects, so the peak normalisation and the silence rule are reimplemented here in numpy with
sox 14.4.2's semantics (``silence.c``). One difference remains: sox truncates each RMS to an
int32 sample value and clears its bits below the input's precision (8 of them for a float32
file) before comparing it with the threshold, while this compares floats; a sample whose RMS
lies that close to the threshold (about 1e-5 relative for a float32 file) may be judged
differently.
"""

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import soundfile
import torch
import torchaudio

from spkid.config import check
from spkid.data.errors import InputError

AMPLITUDE_DB = 20.0  # dB per decade of amplitude
PERCENT = 100.0
RMS_WINDOWS_PER_SECOND = 50  # silence.c: the RMS window is rate / 50 samples long
LOG_FLOOR = 1e-9  # mel power clamped to this before the log
CHANNEL_AXIS = 1  # read_audio's waves are (samples, channels)


@dataclass(frozen=True)
class FrontEnd:
    """Settings of the front end; the defaults are the course's.

    Args:
        sample_rate: rate the audio is resampled to, Hz.
        norm_db: peak level after normalisation, dBFS.
        silence_threshold: sox silence threshold, percent of full scale RMS.
        silence_duration: sox silence duration, seconds: louder stretches at least this
            long start the speech, quieter ones at least this long are removed.
        n_fft: STFT window and FFT length, samples.
        hop_length: STFT hop, samples.
        f_min: lowest mel filter edge, Hz.
        n_mels: mel bands.
        trim_silence: apply the silence rule (False keeps every sample).
        min_frames: fewest frames an utterance may have after trimming.
    """

    sample_rate: int = 16000
    norm_db: float = -3.0
    silence_threshold: float = 1.0
    silence_duration: float = 0.1
    n_fft: int = 400
    hop_length: int = 160
    f_min: float = 50.0
    n_mels: int = 40
    trim_silence: bool = True
    min_frames: int = 1

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "silence_duration", "min_frames"):
            check(
                getattr(self, name) > 0,
                f"frontend.{name}",
                f"must be positive, got {getattr(self, name)}",
            )
        n_freqs = self.n_fft // 2 + 1  # the STFT's frequency bins, each mel band needs some
        check(
            1 <= self.n_mels <= n_freqs,
            "frontend.n_mels",
            f"must be in [1, n_fft // 2 + 1 = {n_freqs}], got {self.n_mels}",
        )
        nyquist = self.sample_rate / 2
        check(
            0 <= self.f_min < nyquist,
            "frontend.f_min",
            f"must be in [0, {nyquist}) Hz, got {self.f_min}",
        )
        check(
            self.hop_length <= self.n_fft,
            "frontend.hop_length",
            f"must be <= n_fft = {self.n_fft}, got {self.hop_length}",
        )
        check(
            0 <= self.silence_threshold <= PERCENT,
            "frontend.silence_threshold",
            f"must be in [0, 100] percent, got {self.silence_threshold}",
        )
        check(self.norm_db <= 0, "frontend.norm_db", f"must be <= 0 dBFS, got {self.norm_db}")

    def as_dict(self) -> dict:
        """The settings as a plain dict (for logging as parameters)."""
        return dataclasses.asdict(self)


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read an audio file through soundfile.

    Args:
        path: the audio file.

    Returns:
        (wave, sample_rate): wave is float32, shape (samples, channels), full scale [-1, 1].

    Raises:
        InputError: the file cannot be read, holds no samples, or holds non-finite samples.
    """
    try:
        wave, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.SoundFileError as error:
        raise InputError(path, f"unreadable audio: {error}") from error
    if wave.size == 0:
        raise InputError(path, "empty audio: 0 samples")
    if not np.isfinite(wave).all():
        raise InputError(path, "audio holds non-finite samples")
    return wave, sample_rate


def peak_normalize(wave: np.ndarray, db: float) -> np.ndarray:
    """Scale a wave so that its largest absolute sample sits at ``db`` dBFS (sox ``norm``).

    Args:
        wave: any shape, float.
        db: target peak level, dBFS.

    Returns:
        The scaled wave, same shape and dtype; an all-zero wave comes back unchanged.
    """
    peak = np.abs(wave).max(initial=0.0)
    if peak == 0.0:
        return wave
    return (wave * (10.0 ** (db / AMPLITUDE_DB) / peak)).astype(wave.dtype, copy=False)


def trim_silence(
    wave: np.ndarray, sample_rate: int, threshold_percent: float, duration_s: float
) -> np.ndarray:
    """Sox ``silence 1 D T% -1 D T%``: drop leading silence and every silence longer than D.

    A sample is loud when the RMS of the window of rate / 50 samples ending at it, times
    100, exceeds T. Input is discarded until D seconds of consecutive loud samples (TRIM);
    output then starts at the first of them (COPY). In COPY, quiet samples are held and
    released when a loud one follows; after D seconds of consecutive quiet samples the held
    ones are discarded, the RMS window is cleared and the effect restarts in TRIM. At the end,
    samples held in COPY are kept.

    Vectorised: loudness is computed once for the whole wave, the state machine then jumps
    between runs of at least D loud or quiet samples, one Python step per kept stretch.

    Args:
        wave: shape (samples,), float, full scale [-1, 1].
        sample_rate: rate of ``wave``, Hz.
        threshold_percent: T, percent of full scale.
        duration_s: D, seconds.

    Returns:
        The kept samples, shape (kept,), same dtype as ``wave``.
    """
    window = sample_rate // RMS_WINDOWS_PER_SECOND
    duration = round(duration_s * sample_rate)
    energy = np.square(wave, dtype=np.float64)
    loud = _is_loud(_trailing_sums(energy, window), window, threshold_percent)
    loud_runs = _long_runs(loud, True, duration)
    quiet_runs = _long_runs(loud, False, duration)
    kept = [wave[:0]]
    restart = 0
    while True:
        search_from = _first_unaffected(energy, restart, window, threshold_percent)
        start = _first_stretch(*loud_runs, search_from, duration)
        if start is None:
            break
        stop = _first_stretch(*quiet_runs, start, duration)
        if stop is None:
            kept.append(wave[start:])
            break
        kept.append(wave[start:stop])
        restart = stop + duration
    return np.concatenate(kept)


def _trailing_sums(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over each sample's trailing window, taking values before the start as zero.

    Computed blockwise (each sum is a prefix of one block plus the rest of the block before),
    so the rounding stays that of a block's sum instead of growing along the signal as it
    would with differences of one long cumulative sum.

    Args:
        values: shape (samples,), float64.
        window: window length, samples.

    Returns:
        shape (samples,): out[i] = values[max(0, i - window + 1) : i + 1].sum().
    """
    count = len(values)
    blocks = -(-count // window) + 1  # a leading block of zeros stands for "before the start"
    flat = np.zeros(blocks * window)
    flat[window : window + count] = values
    prefix = flat.reshape(blocks, window).cumsum(axis=1)  # prefix[k, r] = block k[: r + 1].sum()
    sums = prefix[:-1, -1:] - prefix[:-1]  # the rest of the block before: block k[r + 1 :].sum()
    sums += prefix[1:]
    return sums.reshape(-1)[:count]


def _is_loud(window_sums: np.ndarray, window: int, threshold_percent: float) -> np.ndarray:
    """Sox's test: RMS over a window of ``window`` samples, in percent, above the threshold.

    Args:
        window_sums: shape (samples,), sums of squares over each sample's window.
        window: the divisor of the mean (sox divides partial windows by the full length too).
        threshold_percent: threshold, percent of full scale.

    Returns:
        shape (samples,), bool.
    """
    return np.sqrt(window_sums / window) * PERCENT > threshold_percent


def _long_runs(mask: np.ndarray, value: bool, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ``value`` in a mask that are at least ``length`` long.

    Args:
        mask: shape (samples,), bool.
        value: which runs to find.
        length: shortest run kept, samples.

    Returns:
        (starts, ends): shape (runs,) each, increasing; run i is mask[starts[i] : ends[i]].
    """
    hits = np.concatenate(([False], mask == value, [False])).astype(np.int8)
    steps = np.diff(hits)
    starts, ends = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)
    long = ends - starts >= length
    return starts[long], ends[long]


def _first_stretch(starts: np.ndarray, ends: np.ndarray, position: int, length: int) -> int | None:
    """Where the first ``length`` consecutive samples of the runs begin, at or after position.

    Args:
        starts, ends: runs from ``_long_runs``, shape (runs,) each.
        position: first sample that may be used.
        length: stretch length, samples.

    Returns:
        The stretch's first sample, or None when no run holds one after ``position``.
    """
    first = np.searchsorted(ends, position, side="right")  # only this run can hold position
    for start, end in zip(starts[first : first + 2], ends[first : first + 2]):
        begin = max(int(start), position)
        if end - begin >= length:
            return begin
    return None


def _first_unaffected(
    energy: np.ndarray, restart: int, window: int, threshold_percent: float
) -> int:
    """First sample from which the whole-signal loudness mask is right after a restart.

    A restart clears the RMS window, so the next ``window - 1`` samples see partial sums and
    can only be quieter than the whole-signal mask says. The loud stretch that TRIM waits for
    must start after the last of them that is quiet; from there on both masks agree.

    Args:
        energy: shape (samples,), squared samples, float64.
        restart: first sample after the restart.
        window: RMS window length, samples.
        threshold_percent: threshold, percent of full scale.

    Returns:
        A sample index at or after ``restart``.
    """
    partial_sums = np.cumsum(energy[restart : restart + window - 1])
    quiet = np.flatnonzero(~_is_loud(partial_sums, window, threshold_percent))
    return restart + (int(quiet[-1]) + 1 if quiet.size else 0)


@functools.cache
def _mel_transform(fe: FrontEnd) -> torchaudio.transforms.MelSpectrogram:
    """torchaudio's mel spectrogram with the front end's settings (built once per process)."""
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=fe.sample_rate,
        n_fft=fe.n_fft,
        hop_length=fe.hop_length,
        f_min=fe.f_min,
        n_mels=fe.n_mels,
    )


def log_mel(wave: np.ndarray, fe: FrontEnd) -> torch.Tensor:
    """Log-mel frames: torchaudio's MelSpectrogram, transposed, log of the power clamped.

    Args:
        wave: shape (samples,), float, at ``fe.sample_rate``.
        fe: the front end settings.

    Returns:
        float32, shape (1 + samples // hop_length, n_mels); shape (0, n_mels) when the wave
        is too short for the centred STFT's reflect padding (n_fft // 2 samples or fewer).
    """
    if len(wave) <= fe.n_fft // 2:
        return torch.zeros(0, fe.n_mels)
    samples = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with torch.no_grad():
        power = _mel_transform(fe)(samples)
    return torch.log(torch.clamp(power.T, min=LOG_FLOOR))


def wav2mel(wave: np.ndarray, sample_rate: int, fe: FrontEnd) -> np.ndarray:
    """The whole chain: mono, resample, peak normalise, trim silence, log-mel.

    Args:
        wave: shape (samples, channels), float, full scale [-1, 1].
        sample_rate: rate of ``wave``, Hz.
        fe: the front end settings.

    Returns:
        float32, shape (frames, n_mels); frames may be 0 (e.g. silent input).
    """
    mono = torch.from_numpy(np.ascontiguousarray(wave.mean(axis=CHANNEL_AXIS), dtype=np.float32))
    resampled = torchaudio.functional.resample(mono, sample_rate, fe.sample_rate).numpy()
    normalized = peak_normalize(resampled, fe.norm_db)
    if fe.trim_silence:
        normalized = trim_silence(
            normalized, fe.sample_rate, fe.silence_threshold, fe.silence_duration
        )
    return log_mel(normalized, fe).numpy()


def audio_features(path, fe: FrontEnd) -> np.ndarray:
    """Read an audio file and make its log-mel frames.

    Args:
        path: the audio file.
        fe: the front end settings.

    Returns:
        float32, shape (frames, n_mels), frames >= ``fe.min_frames``.

    Raises:
        InputError: the file is unreadable, empty or non-finite, or too few frames remain.
    """
    frames = wav2mel(*read_audio(path), fe)
    if len(frames) < fe.min_frames:
        after = " after silence trimming" if fe.trim_silence else ""
        raise InputError(path, f"too short{after}: {len(frames)} frames < {fe.min_frames}")
    return frames
