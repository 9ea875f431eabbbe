"""Batched inference with padding masks (never batch 1)."""

import contextlib

import torch

from spkid.train.data import DeviceData


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked; float32 everywhere else."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(
    model,
    data: DeviceData,
    max_frames: int,
    precision: str = "fp32",
    crops: int = 0,
    segment: int = 0,
) -> torch.Tensor:
    """Scores of every utterance of ``data``, in its order.

    Args:
        model: ``model(feats, lengths) -> (B, C)``.
        data: the utterances.
        max_frames: frames per padded batch.
        precision: bf16 or fp32.
        crops: 0 scores the full utterance; N > 0 averages the softmax of N evenly
            spaced crops of ``segment`` frames (the full utterance where shorter).
        segment: crop length for ``crops``.

    Returns:
        (U, C) float32 log-probabilities on the data's device.
    """
    was_training = model.training
    model.eval()
    out = None
    for index, feats, lengths in data.full_batches(max_frames):
        with autocast(data.device, precision):
            if crops:
                logp = _multi_crop(model, feats, lengths, crops, segment)
            else:
                logp = model(feats, lengths).float().log_softmax(-1)
        if out is None:
            out = torch.empty(len(data), logp.shape[1], device=data.device)
        out[index] = logp.float()
    model.train(was_training)
    return out


def _multi_crop(
    model, feats: torch.Tensor, lengths: torch.Tensor, crops: int, segment: int
) -> torch.Tensor:
    """Mean softmax over ``crops`` evenly spaced windows. feats (B, T, M) -> (B, C) log-probs."""
    room = (lengths - segment).clamp(min=0)  # (B,)
    probs = 0.0
    steps = torch.arange(min(segment, feats.shape[1]), device=feats.device)
    for k in range(crops):
        start = (room * k) // max(crops - 1, 1)
        rows = (start[:, None] + steps[None, :]).clamp(max=feats.shape[1] - 1)
        window = feats.gather(1, rows[..., None].expand(-1, -1, feats.shape[2]))
        probs = probs + model(window, lengths.clamp(max=segment)).float().softmax(-1)
    return (probs / crops).log()
