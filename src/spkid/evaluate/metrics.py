"""Classification metrics and the confusion summary, through scikit-learn."""

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, top_k_accuracy_score

TOP_K = 5


def classification_metrics(logp: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1, top-5, macro-F1 and cross-entropy.

    Args:
        logp: (U, C) log-probabilities.
        labels: (U,) true class ids.
    """
    n_classes = logp.shape[1]
    classes = np.arange(n_classes)
    pred = logp.argmax(1)
    top5 = (  # scikit-learn takes 2 classes for a binary task: top-2 of 2 is always right
        top_k_accuracy_score(labels, logp, k=TOP_K, labels=classes) if n_classes > TOP_K else 1.0
    )
    return {
        "top1": float(accuracy_score(labels, pred)),
        "top5": float(top5),
        "macro_f1": float(
            f1_score(labels, pred, average="macro", labels=np.unique(labels), zero_division=0)
        ),
        "loss": float(-logp[np.arange(len(labels)), labels].mean()),
    }


def confusion_summary(
    pred: np.ndarray, labels: np.ndarray, names: list, top_pairs: int = 20
) -> dict:
    """The most-confused speaker pairs and per-speaker accuracy.

    Args:
        pred, labels: (U,) predicted and true class ids.
        names: class id -> speaker name.
        top_pairs: how many pairs to list.

    Returns:
        {"pairs": [{"true", "predicted", "count"}], "per_speaker": [{"speaker", "utterances",
        "accuracy"}] worst first, "matrix": (C, C) counts as nested lists}.
    """
    cm = confusion_matrix(labels, pred, labels=np.arange(len(names)))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:top_pairs]
    pairs = [
        {"true": names[i], "predicted": names[j], "count": int(off[i, j])}
        for i, j in zip(*np.unravel_index(flat, off.shape))
        if off[i, j] > 0
    ]
    support = cm.sum(1)
    per = [
        {
            "speaker": names[i],
            "utterances": int(support[i]),
            "accuracy": float(cm[i, i] / support[i]),
        }
        for i in np.flatnonzero(support)
    ]
    per.sort(key=lambda r: (r["accuracy"], r["speaker"]))
    return {"pairs": pairs, "per_speaker": per, "matrix": cm.tolist()}
