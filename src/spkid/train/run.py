"""One tier's training from a feature store and a split: the `train` stage's library call."""

import ast
import hashlib
import json
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from spkid import checkpoint
from spkid.atomic import write_json
from spkid.data.errors import InputError
from spkid.data.split import trained_mapping
from spkid.data.store import open_store
from spkid.models import count_parameters
from spkid.runtime import DeviceData, pick_device
from spkid.train.config import Runtime, TierConfig
from spkid.train.distributed import SINGLE, Rank
from spkid.train.loop import Trainer

RUN_ID_FILE = "run_id"
METRICS_FILE = "metrics.jsonl"  # the training's metrics, kept while the tracking store is away
RUN_FILES = (RUN_ID_FILE, METRICS_FILE)  # a training's MLflow side
SETTINGS_FILE = "settings.json"  # what trained the checkpoints beside it
TRAINING_MODULE = "spkid.train.run"  # the training's code: this module and what it imports
SRC = Path(__file__).resolve().parents[2]  # the folder holding the spkid package


def module_file(name: str) -> Path | None:
    """The source file of spkid module (or package) ``name``; None outside spkid."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if name.split(".")[0] == "spkid" and path.is_file():
            return path
    return None


def training_code(module: str = TRAINING_MODULE) -> list:
    """The spkid source files ``module`` runs: itself, every spkid module it imports
    (anywhere in its body, transitively) and their packages' ``__init__.py``.

    Returns:
        sorted paths.
    """
    todo, files = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for path in filter(
            None, (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))
        ):
            if path in files:
                continue
            files.add(path)
            todo += _imports(path)
    return sorted(files)


def _imports(path: Path) -> list:
    """Module names imported in ``path`` (``from a import b`` gives a and a.b)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def code_digest(files, root=SRC) -> str:
    """SHA-256 of Python source ``files`` (their paths below ``root``, and bytes): recorded
    with a training's settings, so that a change of the code that trains starts a new
    training instead of resuming a finished one."""
    digest = hashlib.sha256()
    for path in sorted(map(Path, files)):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def training_settings(
    config: TierConfig, runtime: Runtime, seed: int, store_dir, split_file
) -> dict:
    """Everything that decides what a training learns and which checkpoint becomes best.pt:
    the resolved tier, the runtime (but its thread count), the seed, the store's digest, the
    split's bytes' SHA-256 and the training code's digest."""
    return {
        "tier": asdict(config),
        "runtime": {k: v for k, v in asdict(runtime).items() if k != "threads"},
        "seed": seed,
        "digest": json.loads((Path(store_dir) / "meta.json").read_text())["digest"],
        "split": hashlib.sha256(Path(split_file).read_bytes()).hexdigest(),
        "code": code_digest(training_code()),
    }


def discard_if_changed(out_dir, settings: dict) -> bool:
    """Delete what a training with other ``settings`` left in ``out_dir`` (checkpoints, run
    id, metric log), so that only the same training resumes; then record ``settings``.

    Args:
        out_dir: the tier's checkpoint folder (DVC keeps it between runs).
        settings: JSON-able description of the training (training_settings).

    Returns:
        True when something was deleted.
    """
    out_dir, settings = Path(out_dir), json.loads(json.dumps(settings))
    path = out_dir / SETTINGS_FILE
    old = json.loads(path.read_text()) if path.exists() else None
    leftovers = [out_dir / n for n in (checkpoint.LAST, checkpoint.BEST, *RUN_FILES)]
    stale = old != settings and any(p.exists() for p in leftovers)
    for p in leftovers if stale else ():
        p.unlink(missing_ok=True)
    write_json(path, settings)
    return stale


def prepare(out_dir, settings: dict) -> None:
    """Make ``out_dir`` hold only what the training described by ``settings`` resumes from:
    another training's files are deleted, an unreadable ``last.pt`` is set aside (renamed
    ``last.pt.corrupt-<time>``, said on stderr) and without a ``last.pt`` the training
    starts over in a new run (its run id and metric log go)."""
    out_dir = Path(out_dir)
    discard_if_changed(out_dir, settings)
    last = out_dir / checkpoint.LAST
    if last.exists():
        try:
            checkpoint.load(last)
        except (checkpoint.CheckpointError, InputError) as err:
            aside = last.with_name(f"{last.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            last.rename(aside)
            print(f"{err}\nset aside as {aside}; training starts over", file=sys.stderr)
    if not last.exists():
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)


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
        tracker: has log_metrics(dict, step), log_params(dict), log_artifact(path),
            log_data(store_dir, split), log_model(checkpoints, frontend).
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
    speaker2id = trained_mapping(store.speaker2id, (store.speakers[i] for i in split["train"]))
    trainer = Trainer(
        config,
        DeviceData(store, split["train"], device, speaker2id),
        DeviceData(store, split["valid"], device, speaker2id),
        speaker2id,
        out_dir,
        tracker.log_metrics,
        seed,
        runtime.precision,
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
    if rank.rank == 0:  # what needs the run itself, once the training is saved
        tracker.log_data(store_dir, split)
        for name in (checkpoint.BEST, checkpoint.LAST):
            tracker.log_artifact(out_dir / name, "checkpoints")
        tracker.log_model([out_dir / checkpoint.BEST], store.meta["frontend"])
    return summary
