import numpy as np
import pytest

from spkid.evaluate.metrics import classification_metrics


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_classification_metrics_of_few_classes(n_classes):
    """Two trained speakers are a valid model (held-out speakers take the rest)."""
    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(n_classes), size=12))
    labels = np.arange(12) % n_classes
    metrics = classification_metrics(logp, labels)
    assert metrics["top1"] == np.mean(logp.argmax(1) == labels)
    top5 = np.mean([y in np.argsort(-p)[:5] for p, y in zip(logp, labels)])
    assert metrics["top5"] == pytest.approx(top5)
