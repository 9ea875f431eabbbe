"""Checkpoints that rebuild their model: config, model arguments and weights together."""

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
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path, device="cpu") -> dict:
    """Read a checkpoint (tensors on ``device``).

    Raises:
        InputError: naming the file, when it is of another format version than FORMAT.
    """
    ckpt = torch.load(path, map_location=device, weights_only=True)
    found = ckpt.get("format")
    if found != FORMAT:
        age = "an older one without a version" if found is None else f"version {found!r}"
        raise InputError(path, f"checkpoint format is {age}; this code reads version {FORMAT}")
    return ckpt


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
