"""Validation and prediction from a checkpoint: the `validate` and `predict` stages' calls."""

import json
from pathlib import Path

import numpy as np

from spkid.atomic import atomic_path, write_csv, write_json
from spkid.checkpoint import load_model
from spkid.data.store import open_store
from spkid.evaluate.metrics import classification_metrics, confusion_summary
from spkid.evaluate.submission import write_submission
from spkid.runtime import DeviceData, pick_device, predict_logits

WORST_SPEAKERS = 20
VALIDATE_FILES = ("metrics.json", "confusion.json", "per_speaker.csv", "worst_speakers.png")


def _scores(
    checkpoints: list,
    store_dir,
    indices,
    device: str,
    precision: str,
    max_frames: int,
    crops: int,
    segment: int,
):
    """Log-probabilities of one checkpoint, or of several averaged (a tier ensemble), at
    ``precision`` (train.precision; float32 on CPUs).

    Returns:
        ((U, C) log-probabilities, the scored DeviceData, the first checkpoint).
    """
    dev = pick_device(device)
    store = open_store(store_dir)
    indices = np.arange(len(store)) if indices is None else np.asarray(indices)
    models = [load_model(path, dev) for path in checkpoints]
    first = (checkpoints[0], models[0][1])
    for path, (_model, ckpt) in zip(checkpoints, models):
        if ckpt["speaker2id"] != first[1]["speaker2id"]:
            raise ValueError(
                f"{path}: its speakers differ from those of {first[0]}; an ensemble needs models of one store"
            )
    data = DeviceData(store, indices, dev, first[1]["speaker2id"])  # labels: the model's ids
    total = 0.0
    for model, _ckpt in models:
        total = total + predict_logits(model, data, max_frames, precision, crops, segment)
    logp = (total / len(checkpoints)).log_softmax(-1)  # mean log-probability, renormalised
    return logp.cpu().numpy(), data, first[1]


def validate(
    checkpoints: list,
    store_dir,
    split_file,
    out_dir,
    device="auto",
    max_frames=65536,
    precision="auto",
) -> dict:
    """Full-length metrics of a checkpoint (or several, averaged) on the valid split, with a
    confusion summary.

    Writes into ``out_dir``: metrics.json, confusion.json (most-confused pairs),
    per_speaker.csv, predictions.csv (utterance, actual, predicted: DVC's confusion plot and
    compare's paired test) and
    worst_speakers.png (heatmap of the worst speakers' confusions).

    Returns:
        the metrics (top1, top5, macro_f1, loss, utterances).
    """
    valid = json.loads(Path(split_file).read_text())["valid"]
    logp, data, ckpt = _scores(checkpoints, store_dir, valid, device, precision, max_frames, 0, 0)
    labels = data.labels.cpu().numpy()
    names = [s for s, _ in sorted(ckpt["speaker2id"].items(), key=lambda kv: kv[1])]
    metrics = {**classification_metrics(logp, labels), "utterances": len(labels)}
    pred = logp.argmax(1)
    summary = confusion_summary(pred, labels, names)
    out = Path(out_dir)
    write_json(out / "metrics.json", metrics)
    write_json(out / "confusion.json", {"pairs": summary["pairs"]})
    write_csv(
        out / "per_speaker.csv",
        ["speaker", "utterances", "accuracy"],
        [list(r.values()) for r in summary["per_speaker"]],
    )
    write_csv(
        out / "predictions.csv",
        ["utterance", "actual", "predicted"],
        [[u, names[a], names[p]] for u, a, p in zip(data.uids, labels, pred)],
    )
    plot_worst(
        np.array(summary["matrix"]), names, summary["per_speaker"], out / "worst_speakers.png"
    )
    return metrics


def predict(
    checkpoints: list,
    store_dir,
    out_file,
    device="auto",
    max_frames=65536,
    crops=0,
    segment=0,
    metrics_file=None,
    precision="auto",
) -> dict:
    """Write the Kaggle submission (``Id,Category``): one row per test listing entry, the
    ones the features stage rejected given the training pool's most frequent speaker
    (see write_submission).

    Args:
        checkpoints: one checkpoint, or several whose log-probabilities are averaged.
        crops, segment: 0 scores full length; N > 0 averages N crops of ``segment`` frames.
        metrics_file: where to write the returned counts as JSON (None: nowhere).
        precision: train.precision (auto, bf16, fp16, fp32; float32 on CPUs).

    Returns:
        {"rows": rows written, "rejected": rows given the fallback speaker}.
    """
    logp, data, ckpt = _scores(
        checkpoints, store_dir, None, device, precision, max_frames, crops, segment
    )
    id2speaker = {i: s for s, i in ckpt["speaker2id"].items()}
    speakers = [id2speaker[int(k)] for k in logp.argmax(1)]
    meta = open_store(store_dir).meta
    counts = write_submission(out_file, data.uids, speakers, meta, ckpt["speaker2id"])
    if metrics_file is not None:
        write_json(metrics_file, counts)
    return counts


def plot_worst(
    matrix: np.ndarray, names: list, per_speaker: list, path, n: int = WORST_SPEAKERS
) -> None:
    """Heatmap of the confusions among the ``n`` worst speakers (rows: true, cols: predicted)."""
    ids = {s: i for i, s in enumerate(names)}
    worst = [ids[r["speaker"]] for r in per_speaker[:n]]
    sub = matrix[np.ix_(worst, worst)]
    fig, ax = plt().subplots(figsize=(7, 6))
    im = ax.imshow(sub, cmap="viridis")
    labels = [names[i] for i in worst]
    ax.set_xticks(range(len(worst)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(worst)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusions among the {len(worst)} worst speakers")
    fig.colorbar(im)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt().close(fig)


def plt():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot
