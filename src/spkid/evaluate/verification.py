"""Speaker verification on held-out speakers: trials, cosine and AS-norm scores, EER,
minDCF and the DET curve.

Trials: every pair of two utterances of one held-out speaker (target) and every pair of two
held-out speakers' utterances (non-target), each kind cut to at most a set count by a seeded
draw without replacement; the counts are reported with the metrics.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import DetCurveDisplay, roc_curve

from spkid.atomic import atomic_path, write_json
from spkid.config import check
from spkid.evaluate.bank import normalise, speaker_means
from spkid.evaluate.embed import fused_digest, read_fused
from spkid.evaluate.openset import openset_metrics
from spkid.evaluate.report import plt

P_TARGETS = (0.01, 0.05)  # minDCF's target priors (NIST SRE / VoxSRC operating points)
C_MISS = 1.0
C_FA = 1.0
DRAW_FACTOR = 2  # non-target pairs drawn per round of sampling, per pair still missing
VERIFY_FILES = ("metrics.json", "det.png")


@dataclass(frozen=True)
class VerifyConfig:
    """The ``verify`` block.

    Args:
        target_trials, nontarget_trials: at most this many trials of each kind.
        cohort_top: AS-norm's N: the top-N of the cohort (the trained speakers' mean
            embeddings over the valid split) scored against each side of a trial.
        enroll: open set: utterances enrolling each enrolled held-out speaker.
        false_alarm: open set: the false-alarm rate the reported threshold is set for.
    """

    target_trials: int = 20000
    nontarget_trials: int = 200000
    cohort_top: int = 300
    enroll: int = 5
    false_alarm: float = 0.01

    def __post_init__(self):
        for name in ("target_trials", "nontarget_trials", "enroll"):
            check(getattr(self, name) >= 1, f"verify.{name}", "must be at least 1")
        check(self.cohort_top >= 2, "verify.cohort_top", "must be at least 2 (a deviation)")
        check(
            0.0 < self.false_alarm < 1.0,
            "verify.false_alarm",
            f"must be in (0, 1), got {self.false_alarm}",
        )


def make_trials(speakers, max_target: int, max_nontarget: int, seed: int) -> tuple:
    """Verification trials among utterances.

    Args:
        speakers: (U,) speaker of each utterance.
        max_target, max_nontarget: at most this many trials of each kind (all when fewer).
        seed: the draw's seed.

    Returns:
        ((T, 2) int64 utterance pairs i < j, target pairs first; (T,) bool is-target).
    """
    speakers = np.asarray(speakers)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(speakers == s) for s in np.unique(speakers)]
    target = np.concatenate(
        [np.stack([g[i], g[j]], 1) for g in groups for i, j in [np.triu_indices(len(g), 1)]]
        or [np.zeros((0, 2), np.int64)]
    )
    target = _cut(target, max_target, rng)
    nontarget = _nontarget_pairs(speakers, max_nontarget, rng)
    labels = np.r_[np.ones(len(target), bool), np.zeros(len(nontarget), bool)]
    return np.concatenate([target, nontarget]).astype(np.int64), labels


def _cut(pairs: np.ndarray, cap: int, rng) -> np.ndarray:
    """At most ``cap`` of ``pairs`` (P, 2), drawn without replacement, in their order."""
    if len(pairs) <= cap:
        return pairs
    return pairs[np.sort(rng.choice(len(pairs), cap, replace=False))]


def _nontarget_pairs(speakers: np.ndarray, cap: int, rng) -> np.ndarray:
    """Pairs (i < j) of two speakers' utterances: all of them, or ``cap`` drawn uniformly."""
    n = len(speakers)
    _names, sizes = np.unique(speakers, return_counts=True)
    total = (n * n - int((sizes**2).sum())) // 2
    if total <= cap:
        i, j = np.triu_indices(n, 1)
        keep = speakers[i] != speakers[j]
        return np.stack([i[keep], j[keep]], 1)
    codes = np.zeros(0, np.int64)
    while len(codes) < cap:  # rejection sampling of pair codes i * n + j
        draw = rng.integers(n, size=(DRAW_FACTOR * (cap - len(codes)), 2))
        i, j = draw.min(1), draw.max(1)
        codes = np.union1d(codes, (i * n + j)[speakers[i] != speakers[j]])
    codes = np.sort(rng.choice(codes, cap, replace=False))
    return np.stack([codes // n, codes % n], 1)


def cosine_scores(embeddings: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """(U, E) unit-length embeddings, (T, 2) pairs -> (T,) cosine scores."""
    return np.einsum("te,te->t", embeddings[trials[:, 0]], embeddings[trials[:, 1]])


def cohort_stats(embeddings: np.ndarray, cohort: np.ndarray, top: int) -> tuple:
    """Mean and (population) standard deviation of each embedding's ``top`` highest cosine
    scores against the cohort.

    Args:
        embeddings: (U, E) unit-length.
        cohort: (K, E) unit-length.
        top: N of AS-norm's top-N (all K when fewer).

    Returns:
        ((U,) means, (U,) standard deviations).
    """
    scores = embeddings @ cohort.T  # (U, K)
    top = min(top, scores.shape[1])
    best = np.partition(scores, scores.shape[1] - top, axis=1)[:, -top:]  # (U, top)
    return best.mean(1), best.std(1)


def asnorm(
    scores: np.ndarray, embeddings: np.ndarray, trials: np.ndarray, cohort: np.ndarray, top: int
) -> np.ndarray:
    """Adaptive symmetric score normalisation (Matejka et al., 2017; WeSpeaker's recipe):
    ``0.5 * ((s - m_l) / d_l + (s - m_r) / d_r)`` with m, d each side's cohort_stats.

    Args:
        scores: (T,) raw scores of ``trials`` (T, 2) over ``embeddings`` (U, E).
        cohort: (K, E) unit-length cohort embeddings (trained speakers).
        top: N of the top-N cohort.

    Returns:
        (T,) normalised scores.
    """
    mean, std = cohort_stats(embeddings, cohort, top)
    left, right = trials[:, 0], trials[:, 1]
    return 0.5 * ((scores - mean[left]) / std[left] + (scores - mean[right]) / std[right])


def error_rates(scores: np.ndarray, is_target: np.ndarray) -> tuple:
    """(false-alarm rates, miss rates) at every threshold, from accepting nobody to everyone
    (scikit-learn's ROC, every point kept)."""
    is_target = np.asarray(is_target, bool)
    if is_target.all() or not is_target.any():
        raise ValueError("error rates need both target and non-target trials")
    fa, hit, _thresholds = roc_curve(is_target, scores, drop_intermediate=False)
    return fa, 1.0 - hit


def equal_error_rate(scores: np.ndarray, is_target: np.ndarray) -> float:
    """The rate where misses equal false alarms, linearly interpolated between the two ROC
    points around the crossing."""
    fa, miss = error_rates(scores, is_target)
    gap = miss - fa  # falls from 1 (accept nobody) to -1 (accept everyone)
    i = int(np.flatnonzero(gap <= 0)[0])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fa[i - 1] + t * (fa[i] - fa[i - 1]))


def min_dcf(
    scores: np.ndarray, is_target: np.ndarray, p_target: float, c_miss=C_MISS, c_fa=C_FA
) -> float:
    """Minimum normalised detection cost over thresholds:
    ``min (c_miss * P_miss * p + c_fa * P_fa * (1 - p)) / min(c_miss * p, c_fa * (1 - p))``."""
    fa, miss = error_rates(scores, is_target)
    cost = c_miss * miss * p_target + c_fa * fa * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def verification_metrics(scores: np.ndarray, is_target: np.ndarray) -> dict:
    """EER and minDCF at each of P_TARGETS (keys eer, mindcf_p01, mindcf_p05)."""
    out = {"eer": equal_error_rate(scores, is_target)}
    for p in P_TARGETS:
        out[f"mindcf_p{round(p * 100):02d}"] = min_dcf(scores, is_target, p)
    return out


def plot_det(curves: dict, is_target: np.ndarray, path, title: str) -> None:
    """DET curves (scikit-learn's DetCurveDisplay) of several scorings of one trial list.

    Args:
        curves: {name: (T,) scores}.
        is_target: (T,) bool.
        path: the PNG.
        title: the figure's title.
    """
    fig, ax = plt().subplots(figsize=(6, 5))
    for name, scores in curves.items():
        DetCurveDisplay.from_predictions(is_target, scores, ax=ax, name=name)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt().close(fig)


def verify(embed_dirs: list, out_dir, config: VerifyConfig, seed: int) -> dict:
    """Verification (cosine and AS-norm) and open-set identification on the held-out
    speakers of one tier's embedding folder, or of several fused (an ensemble: read_fused,
    whose cosine is the mean of the members' cosines): the `verify` stage's call.

    Writes ``out_dir``/metrics.json and det.png (a note instead of curves when the split
    holds no speaker out).

    Returns:
        {"trials": counts, "cosine", "asnorm": EER and minDCF, "openset": open-set metrics}
        ({"heldout_speakers": 0} without held-out speakers).
    """
    out = Path(out_dir)
    emb, _uids, speakers = read_fused(embed_dirs, "heldout")
    if not len(emb):
        write_json(out / "metrics.json", {"heldout_speakers": 0})
        plot_note(out / "det.png", "no held-out speakers (split.heldout_speakers is 0)")
        return {"heldout_speakers": 0}
    cohort = _cohort(embed_dirs)
    trials, is_target = make_trials(speakers, config.target_trials, config.nontarget_trials, seed)
    raw = cosine_scores(emb, trials)
    normed = asnorm(raw, emb, trials, cohort, config.cohort_top)
    metrics = {
        "trials": {
            "target": int(is_target.sum()),
            "nontarget": int((~is_target).sum()),
            "speakers": len(set(speakers)),
            "utterances": len(speakers),
        },
        "cosine": verification_metrics(raw, is_target),
        "asnorm": {
            **verification_metrics(normed, is_target),
            "cohort": len(cohort),
            "top": min(config.cohort_top, len(cohort)),
        },
        "openset": openset_metrics(
            emb, speakers, fused_digest(embed_dirs), config.enroll, config.false_alarm, seed
        ),
    }
    write_json(out / "metrics.json", metrics)
    title = f"held-out speakers: {metrics['trials']['target']} target, "
    title += f"{metrics['trials']['nontarget']} non-target trials"
    plot_det({"cosine": raw, "AS-norm": normed}, is_target, out / "det.png", title)
    return metrics


def _cohort(embed_dirs: list) -> np.ndarray:
    """(K, E) unit-length mean embeddings of the trained speakers over the valid split."""
    valid, _uids, speakers = read_fused(embed_dirs, "valid")
    _names, means, _counts = speaker_means(valid, speakers)
    if len(means) < 2:
        raise ValueError(
            f"{embed_dirs[0]}: AS-norm's cohort needs 2 trained speakers in the valid split, "
            f"got {len(means)} (split.valid_ratio > 0)"
        )
    return normalise(means)


def plot_note(path, text: str) -> None:
    """A PNG holding only ``text`` (a figure output with nothing to draw)."""
    fig, ax = plt().subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt().close(fig)
