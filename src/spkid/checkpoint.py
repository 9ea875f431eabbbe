"""Checkpoints that rebuild their model: config, model arguments and weights together."""

import errno
import io
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from spkid.atomic import atomic_path
from spkid.config import build
from spkid.data.errors import InputError
from spkid.models import ModelConfig, SpeakerNet

BEST = "best.pt"
LAST = "last.pt"
FORMAT = 1  # the payload's layout; bump it when a change makes older files unreadable


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back."""


def save(path, model, config, n_mels: int, speaker2id: dict, **state) -> None:
    """Write a checkpoint atomically.

    Args:
        path: the file.
        model: the (unwrapped) SpeakerNet.
        config: the resolved TierConfig.
        n_mels, speaker2id: the data the model was trained on.
        **state: anything else to keep (step, optimiser, generator state, metrics...).
    """
    payload = {
        "format": FORMAT,
        "config": asdict(config),
        "model_args": {"n_mels": n_mels, "n_classes": len(speaker2id)},
        "speaker2id": speaker2id,
        "model": model.state_dict(),
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory: a full disk then fails as an OSError below
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise OSError(
            errno.ENOSPC,
            f"cannot write checkpoint {path}: the disk is full ({buffer.tell()} bytes needed); "
            "the previous checkpoint there is kept: free space and run again",
        ) from None


def load(path, device="cpu") -> dict:
    """Read a checkpoint (tensors on ``device``).

    Raises:
        CheckpointError: naming the file, when it is truncated or not a plain checkpoint
            (objects other than tensors and plain data are refused, never unpickled).
        InputError: naming the file, when it is of another format version than FORMAT.
    """
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:
        reason = "it holds objects other than tensors and plain data, refused as unsafe"
    except (OSError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError):
        reason = "it is truncated or not a torch checkpoint"
    else:
        found = ckpt.get("format") if isinstance(ckpt, dict) else None
        if found != FORMAT:
            age = "an older one without a version" if found is None else f"version {found!r}"
            raise InputError(path, f"checkpoint format is {age}; this code reads version {FORMAT}")
        return ckpt
    raise CheckpointError(
        f"checkpoint {path} cannot be read: {reason}; delete it and train again"
    ) from None


def rebuild(checkpoint: dict) -> SpeakerNet:
    """The SpeakerNet stored in ``checkpoint``, weights loaded, in eval mode."""
    cfg = build(ModelConfig, checkpoint["config"]["model"], "checkpoint.config.model")
    model = SpeakerNet(cfg, **checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def load_model(path, device="cpu"):
    """(model on ``device``, checkpoint) from a checkpoint file."""
    ckpt = load(Path(path), device)
    return rebuild(ckpt).to(device), ckpt
