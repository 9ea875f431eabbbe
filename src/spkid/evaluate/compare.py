"""Every tier side by side: a markdown table and a bar chart."""

from spkid.atomic import atomic_path, write_text
from spkid.evaluate.report import plt

COLUMNS = (
    "tier",
    "valid top-1",
    "valid top-5",
    "macro-F1",
    "parameters",
    "train s",
    "steps",
    "course Kaggle",
)


def tier_rows(tiers: list, train: dict, valid: dict, baselines: dict) -> list:
    """One row per tier.

    Args:
        tiers: tier names in order.
        train: tier -> the train stage's summary (parameters, train_seconds, steps).
        valid: tier -> the validate stage's metrics (top1, top5, macro_f1).
        baselines: tier -> the course's Kaggle score for that tier (may be missing).
    """
    return [
        {
            "tier": t,
            "top1": valid[t]["top1"],
            "top5": valid[t]["top5"],
            "macro_f1": valid[t]["macro_f1"],
            "parameters": train[t]["parameters"],
            "train_seconds": train[t]["train_seconds"],
            "steps": train[t]["steps"],
            "baseline": baselines.get(t),
        }
        for t in tiers
    ]


def markdown(rows: list, title: str) -> str:
    """The comparison as a markdown table."""
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        base = f"{r['baseline']:.3f}" if r["baseline"] is not None else "-"
        lines.append(
            f"| {r['tier']} | {r['top1']:.3f} | {r['top5']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['parameters']:,} | {r['train_seconds']:.0f} | {r['steps']} | {base} |"
        )
    lines += [
        "",
        (
            "Course Kaggle: the HW4 public-leaderboard score of the course's tier (600 "
            "speakers, test set), for orientation; valid columns are measured on this run's data."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_comparison(rows: list, title: str, md_path, png_path) -> None:
    """Write the table and a grouped bar chart of valid top-1 beside the course score."""
    write_text(md_path, markdown(rows, title))
    p = plt()
    fig, ax = p.subplots(figsize=(7, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["top1"] for r in rows], 0.4, label="valid top-1 (this run)")
    ax.bar([i + 0.2 for i in x], [r["baseline"] or 0 for r in rows], 0.4, label="course Kaggle")
    ax.set_xticks(list(x), [r["tier"] for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    p.close(fig)
