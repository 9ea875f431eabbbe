"""Make tests/serve/data/demo4.pt: a medium-tier model trained on the training part of the serve
tests' demo corpus (conftest.KNOWN_DEMO), so that those tests can check that answers name the
right speaker of the corpus's test WAVs without training for minutes. Rerun after a change of
the models or of the checkpoint format (the second step runs where no audio library is
needed, e.g. on a GPU machine):

    python -m tests.serve.make_model prepare DIR      # the corpus, its feature store, a split
    python -m tests.serve.make_model train DIR [--device cuda] [--steps 600]
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import yaml

from spkid import checkpoint
from spkid.tracking import NullRun
from spkid.train.config import Runtime, resolve_tier
from spkid.train.run import train_tier

REPO = Path(__file__).resolve().parents[2]
KNOWING_MODEL = Path(__file__).parent / "data" / "demo4.pt"
STEPS = 600
MODEL = {"d_model": 64, "ffn": 128}
RECIPE = {
    "warmup": 50,
    "valid_every": 100,
    "checkpoint_every": 100,
    "log_every": 50,
    "select": "best",
    "channel": 1.0,
}


class Quiet(NullRun):
    """A tracker that prints validations and logs nothing."""

    def log_metrics(self, metrics: dict, step: int) -> None:
        if "valid/top1" in metrics:
            print(step, metrics)


def prepare(root: Path) -> None:
    from spkid.data.split import split_indices
    from spkid.data.store import open_store
    from tests.serve.conftest import KNOWN_DEMO, make_demo

    make_demo(root, KNOWN_DEMO)
    store = open_store(root / "train")
    train, valid = split_indices(store.speakers, store.sessions, valid_ratio=0.1, seed=0)
    (root / "split.json").write_text(json.dumps({"train": train.tolist(), "valid": valid.tolist()}))


def train(root: Path, device: str, steps: int) -> None:
    tiers = yaml.safe_load((REPO / "params.yaml").read_text())["tiers"]
    config = resolve_tier(tiers, "medium", "demo")
    config = replace(
        config,
        model=replace(config.model, **MODEL),
        recipe=replace(config.recipe, steps=steps, **RECIPE),
    )
    runtime = Runtime(device=device, compile=False)
    summary = train_tier(
        config, runtime, root / "train", root / "split.json", root / "models", Quiet(), 0
    )
    model, ckpt = checkpoint.load_model(root / "models" / checkpoint.BEST)
    KNOWING_MODEL.parent.mkdir(exist_ok=True)
    checkpoint.save(KNOWING_MODEL, model, config, ckpt["model_args"]["n_mels"], ckpt["speaker2id"])
    print(summary, KNOWING_MODEL.stat().st_size, "bytes")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("step", choices=("prepare", "train"))
    args.add_argument("root", type=Path)
    args.add_argument("--device", default="cpu")
    args.add_argument("--steps", type=int, default=STEPS)
    args = args.parse_args()
    if args.step == "prepare":
        prepare(args.root)
    else:
        train(args.root, args.device, args.steps)


if __name__ == "__main__":
    main()
