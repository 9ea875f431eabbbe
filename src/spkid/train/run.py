"""One tier's training from a feature store and a split: the `train` stage's library call."""

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from spkid.atomic import write_json
from spkid.data.split import trained_mapping
from spkid.data.store import open_store
from spkid.models import count_parameters
from spkid.train import checkpoint
from spkid.train.config import Runtime, TierConfig
from spkid.train.data import DeviceData
from spkid.train.distributed import SINGLE, Rank
from spkid.train.loop import Trainer

RUN_ID_FILE = "run_id"
SETTINGS_FILE = "settings.json"  # what trained the checkpoints beside it
TRAINING_CODE = (Path(__file__).parent, Path(__file__).parent.parent / "models")  # train, models


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def code_digest(folders) -> str:
    """SHA-256 of the Python sources under ``folders`` (names and bytes): recorded with a
    training's settings, so that a change of the code that trains starts a new training
    instead of resuming a finished one."""
    digest = hashlib.sha256()
    for folder in map(Path, folders):
        for path in sorted(folder.rglob("*.py")):
            digest.update(str(path.relative_to(folder.parent)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def discard_if_changed(out_dir, settings: dict) -> bool:
    """Delete what a training with other ``settings`` left in ``out_dir`` (checkpoints, run id),
    so that only the same training resumes; then record ``settings``.

    Args:
        out_dir: the tier's checkpoint folder (DVC keeps it between runs).
        settings: JSON-able description of the training (resolved tier, seed, data and
            code digests).

    Returns:
        True when something was deleted.
    """
    out_dir, settings = Path(out_dir), json.loads(json.dumps(settings))
    path = out_dir / SETTINGS_FILE
    old = json.loads(path.read_text()) if path.exists() else None
    leftovers = [out_dir / n for n in (checkpoint.LAST, checkpoint.BEST, RUN_ID_FILE)]
    stale = old != settings and any(p.exists() for p in leftovers)
    for p in leftovers if stale else ():
        p.unlink(missing_ok=True)
    write_json(path, settings)
    return stale


def read_run_id(out_dir) -> str | None:
    """The MLflow run of an interrupted training in ``out_dir`` (None: start afresh)."""
    out_dir = Path(out_dir)
    if (out_dir / checkpoint.LAST).exists() and (out_dir / RUN_ID_FILE).exists():
        return (out_dir / RUN_ID_FILE).read_text().strip()
    return None


def warn_if_segment_too_long(segment: int, lengths) -> None:
    """Warn when ``recipe.segment`` exceeds every training utterance: every crop is padded.

    Args:
        segment: the recipe's crop length, frames.
        lengths: (U,) int ndarray, frames of each training utterance.
    """
    longest = int(lengths.max(initial=0))
    if segment > longest:
        warnings.warn(
            f"recipe.segment: {segment} frames is longer than every training utterance "
            f"(the longest has {longest} frames): every crop is padded",
            stacklevel=2,
        )


def train_tier(
    config: TierConfig,
    runtime: Runtime,
    store_dir,
    split_file,
    out_dir,
    tracker,
    seed: int,
    rank: Rank = SINGLE,
) -> dict:
    """Train one tier, resuming from ``out_dir/last.pt`` when present.

    Args:
        config: the resolved tier.
        runtime: device, precision, compile.
        store_dir: the training feature store.
        split_file: JSON with ``train`` and ``valid`` index lists; the model's classes are
            the speakers of ``train`` (held-out speakers have none).
        out_dir: checkpoints (kept between runs: DVC ``persist``).
        tracker: has log_metrics(dict, step), log_params(dict), log_artifact(path), log_model(model).
        seed: base seed.
        rank: data-parallel position (rank 0 logs and writes).

    Returns:
        the training summary (best valid top-1 and its step, steps, seconds, parameters).
    """
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    device = pick_device(runtime.device, rank.local)
    store = open_store(store_dir)
    split = json.loads(Path(split_file).read_text())
    warn_if_segment_too_long(config.recipe.segment, store.lengths[split["train"]])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = runtime.precision if device.type == "cuda" else "fp32"
    speaker2id = trained_mapping(store.speaker2id, (store.speakers[i] for i in split["train"]))
    trainer = Trainer(
        config,
        DeviceData(store, split["train"], device, speaker2id),
        DeviceData(store, split["valid"], device, speaker2id),
        speaker2id,
        out_dir,
        tracker.log_metrics,
        seed,
        precision,
        runtime.compile,
        rank.rank,
        rank.world,
    )
    trainer.resume()
    if rank.rank == 0:
        tracker.log_params(
            {**asdict(config), "runtime": asdict(runtime), "seed": seed, "world": rank.world}
        )
    summary = trainer.fit()
    summary["parameters"] = count_parameters(trainer.model)
    if rank.rank == 0:
        for name in (checkpoint.BEST, checkpoint.LAST):
            tracker.log_artifact(out_dir / name, "checkpoints")
        model, _ = checkpoint.load_model(out_dir / checkpoint.BEST)
        tracker.log_model(model)
    return summary
