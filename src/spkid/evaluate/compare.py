"""Every tier side by side: a markdown table and a bar chart, with each tier's 95 % interval
on top-1 (Wilson), an exact paired test (McNemar) against the tier listed before it, and its
verification EER and minDCF on the held-out speakers (AS-norm scores)."""

import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, norm

from spkid.atomic import atomic_path, write_text
from spkid.evaluate.report import plt

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # McNemar p below this: the two tiers' difference is marked real
COLUMNS = (
    "tier",
    "valid top-1",
    "95 % interval",
    "vs previous (+/-)",
    "McNemar p",
    "valid top-5",
    "macro-F1",
    "EER %",
    "minDCF 0.01",
    "minDCF 0.05",
    "parameters",
    "train s",
    "steps",
    "course Kaggle",
)


VERIFY_KEYS = ("eer", "mindcf_p01", "mindcf_p05")  # verify's AS-norm figures in the table
NOT_VERIFIED = "n/a"  # the verify cells of a split that holds no speaker out


def wilson(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple:
    """Wilson score interval (low, high) of the proportion ``correct / total``."""
    if total <= 0:
        raise ValueError(f"a Wilson interval needs at least one trial, got {total}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> dict:
    """Exact McNemar test of two classifiers on the same utterances: a two-sided binomial
    test of the discordant pairs at one half.

    Args:
        right_a, right_b: (U,) bool, whether each classifier got each utterance right.

    Returns:
        {"a_only": utterances only a got right, "b_only": only b, "p": the p-value}.
    """
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(~right_a & right_b))
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": float(p)}


def read_correct(path) -> dict:
    """utterance -> whether it was predicted right, from a validate stage's predictions.csv
    (utterance, actual, predicted)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"utterance", "actual", "predicted"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: no rows or no column {sorted(missing)} (rerun validate)")
    return {r["utterance"]: r["actual"] == r["predicted"] for r in rows}


def paired(correct: dict, tiers: list, sources: dict) -> dict:
    """Each tier's (U,) bool vector of right predictions, in one utterance order.

    Args:
        correct: tier -> read_correct's dict.
        sources: tier -> the file it came from (named when the utterances differ).
    """
    order = sorted(correct[tiers[0]])
    for t in tiers[1:]:
        if set(correct[t]) != set(order):
            raise ValueError(
                f"{sources[t]} and {sources[tiers[0]]} hold different utterances: "
                "validate every tier on the same split"
            )
    return {t: np.array([correct[t][u] for u in order]) for t in tiers}


def read_verification(path) -> dict | None:
    """A verify stage's AS-norm EER and minDCFs (VERIFY_KEYS) from its metrics.json; None
    when its split held no speaker out (split.heldout_speakers 0: nothing to verify).

    Raises:
        ValueError: naming ``path``, when it is missing or lacks the figures.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no verify metrics (run its verify stage)")
    metrics = json.loads(path.read_text())
    if metrics.get("heldout_speakers") == 0:
        return None
    try:
        return {k: float(metrics["asnorm"][k]) for k in VERIFY_KEYS}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: no asnorm {list(VERIFY_KEYS)} ({err!r}); rerun verify") from None


def tier_rows(
    tiers: list, train: dict, valid: dict, right: dict, verified: dict, baselines: dict
) -> list:
    """One row per tier.

    Args:
        tiers: tier names in order; each is tested against the one before it.
        train: tier -> the train stage's summary (parameters, train_seconds, steps).
        valid: tier -> the validate stage's metrics (top1, top5, macro_f1).
        right: tier -> (U,) bool, right predictions on the shared valid utterances (paired).
        verified: tier -> read_verification's figures, or None (no held-out speakers).
        baselines: tier -> the course's Kaggle score for that tier (may be missing).
    """
    rows = []
    for i, t in enumerate(tiers):
        low, high = wilson(int(right[t].sum()), len(right[t]))
        test = mcnemar(right[t], right[tiers[i - 1]]) if i else None
        rows.append(
            {
                "tier": t,
                "top1": valid[t]["top1"],
                "top1_low": low,
                "top1_high": high,
                "vs": tiers[i - 1] if i else None,
                "wins": test and test["a_only"],
                "losses": test and test["b_only"],
                "mcnemar_p": test and test["p"],
                "top5": valid[t]["top5"],
                "macro_f1": valid[t]["macro_f1"],
                **{k: verified[t] and verified[t][k] for k in VERIFY_KEYS},
                "parameters": train[t]["parameters"],
                "train_seconds": train[t]["train_seconds"],
                "steps": train[t]["steps"],
                "baseline": baselines.get(t),
            }
        )
    return rows


def _test_cells(r: dict) -> str:
    if r["vs"] is None:
        return "- | -"
    mark = " (real)" if r["mcnemar_p"] < SIGNIFICANCE else ""
    return f"+{r['wins']} / -{r['losses']} vs {r['vs']} | {r['mcnemar_p']:.3g}{mark}"


def _verify_cells(r: dict) -> str:
    if r["eer"] is None:
        return " | ".join([NOT_VERIFIED] * len(VERIFY_KEYS))
    return f"{100 * r['eer']:.2f} | {r['mindcf_p01']:.3f} | {r['mindcf_p05']:.3f}"


def markdown(rows: list, title: str, utterances: int) -> str:
    """The comparison as a markdown table."""
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        base = f"{r['baseline']:.3f}" if r["baseline"] is not None else "-"
        lines.append(
            f"| {r['tier']} | {r['top1']:.3f} | {r['top1_low']:.3f}-{r['top1_high']:.3f} | "
            f"{_test_cells(r)} | {r['top5']:.3f} | {r['macro_f1']:.3f} | {_verify_cells(r)} | "
            f"{r['parameters']:,} | {r['train_seconds']:.0f} | {r['steps']} | {base} |"
        )
    lines += [
        "",
        (
            f"Valid: {utterances} utterances. Interval: Wilson's {CONFIDENCE:.0%} score interval "
            "on top-1. +/-: utterances this tier gets right and the previous row's wrong, and the "
            "reverse; McNemar p: the exact two-sided binomial test of those counts, (real) below "
            f"{SIGNIFICANCE}. EER and minDCF (p_target 0.01 and 0.05, unit costs): verification "
            "trials among the held-out speakers, AS-norm scores (reports/verify/<tier>/"
            "metrics.json; the ensemble's: its members' cosines averaged); "
            f"{NOT_VERIFIED}: the split holds no speaker out (split.heldout_speakers 0). "
            "Course Kaggle: the HW4 public-leaderboard score of the course's "
            "tier (600 speakers, test set), for orientation; valid columns are measured on this "
            "run's data."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_comparison(rows: list, title: str, utterances: int, md_path, png_path) -> None:
    """Write the table and a figure: valid top-1 (with its interval) beside the course score,
    and each verified tier's EER."""
    write_text(md_path, markdown(rows, title, utterances))
    p = plt()
    fig, (ax, right) = p.subplots(1, 2, figsize=(12, 4), width_ratios=(3, 2))
    x = np.arange(len(rows))
    top1 = np.array([r["top1"] for r in rows])
    low, high = (np.array([r[k] for r in rows]) for k in ("top1_low", "top1_high"))
    spread = np.clip([top1 - low, high - top1], 0, None)  # top1 is the interval's own proportion
    ax.bar(x - 0.2, top1, 0.4, yerr=spread, capsize=3, label="valid top-1, 95 % interval")
    ax.bar(x + 0.2, [r["baseline"] or 0 for r in rows], 0.4, label="course Kaggle")
    ax.set_xticks(list(x), [r["tier"] for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right")
    _plot_eer(right, rows)
    fig.tight_layout()
    with atomic_path(Path(png_path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    p.close(fig)


def _plot_eer(ax, rows: list) -> None:
    """Bars of the verified tiers' EER (AS-norm); a note where no tier was verified."""
    verified = [r for r in rows if r["eer"] is not None]
    ax.set_title("held-out speakers: verification EER (AS-norm)")
    if not verified:
        ax.axis("off")
        ax.text(0.5, 0.5, "no held-out speakers (split.heldout_speakers 0)", ha="center")
        return
    ax.bar(range(len(verified)), [100 * r["eer"] for r in verified])
    ax.set_xticks(range(len(verified)), [r["tier"] for r in verified])
    ax.set_ylabel("EER %")
