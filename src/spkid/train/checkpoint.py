"""Checkpoints that rebuild their model: config, model arguments and weights together."""

from dataclasses import asdict
from pathlib import Path

import torch

from spkid.atomic import atomic_path
from spkid.config import build
from spkid.models import ModelConfig, SpeakerNet

BEST = "best.pt"
LAST = "last.pt"


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
        "config": asdict(config),
        "model_args": {"n_mels": n_mels, "n_classes": len(speaker2id)},
        "speaker2id": speaker2id,
        "model": model.state_dict(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path, device="cpu") -> dict:
    """Read a checkpoint (tensors on ``device``)."""
    return torch.load(path, map_location=device, weights_only=True)


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
