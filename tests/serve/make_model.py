"""Make tests/serve/data/demo4.pt: a medium-tier model trained on the serve tests' demo corpus
(conftest.DEMO), so that those tests can check that served answers name the right speaker
without training for minutes. Rerun after a change of the models or the checkpoint format:

    python -m tests.serve.make_model [--device cuda] [--steps 600]
"""

import argparse
import tempfile
from pathlib import Path

from spkid.data.store import open_store
from spkid.train import checkpoint
from spkid.train.config import Runtime
from spkid.train.run import train_tier
from tests.serve.conftest import KNOWING_MODEL, make_demo, tier_config


class Quiet:
    """A tracker that prints validations and logs nothing."""

    def log_metrics(self, metrics: dict, step: int) -> None:
        if "valid/top1" in metrics:
            print(step, metrics)

    def log_params(self, params: dict) -> None:
        pass

    def log_artifact(self, path, folder=None) -> None:
        pass

    def log_model(self, checkpoints, frontend) -> None:
        pass


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--device", default="cpu")
    args.add_argument("--steps", type=int, default=600)
    args = args.parse_args()
    config = tier_config(
        "medium", tiny=False, model={"d_model": 64, "ffn": 128}, steps=args.steps, warmup=50,
        valid_every=100, checkpoint_every=100, log_every=50, select="best",
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo(tmp)
        summary = train_tier(config, Runtime(device=args.device, compile=False), root / "train",
                             root / "split.json", root / "models", Quiet(), 0)
        model, ckpt = checkpoint.load_model(root / "models" / checkpoint.BEST)
        store = open_store(root / "train")
        KNOWING_MODEL.parent.mkdir(exist_ok=True)
        checkpoint.save(KNOWING_MODEL, model, config, store.n_mels, store.speaker2id)
    print(summary, Path(KNOWING_MODEL).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
