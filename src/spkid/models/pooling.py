"""Pooling: ``forward(frames, lengths) -> embedding`` with ``out_dim``; padding ignored."""

import torch
from torch import nn

from spkid.models.masking import padding_mask


class MeanPooling(nn.Module):
    """Average over valid frames. (B, T, D), (B,) -> (B, D)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = (~padding_mask(lengths, frames.shape[1])).unsqueeze(-1).to(frames.dtype)
        return (frames * valid).sum(1) / lengths.clamp(min=1)[:, None].to(frames.dtype)


class SelfAttentionPooling(nn.Module):
    """Self-attention pooling (the course's SAP): softmax(w . h_t) weighted mean.

    Args:
        in_dim: frame width D.
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.score = nn.Linear(in_dim, 1)
        self.out_dim = in_dim

    def weights(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D), (B,) -> (B, T) attention weights, zero on padding, rows sum to 1."""
        scores = self.score(frames).squeeze(-1).float()
        scores = scores.masked_fill(padding_mask(lengths, frames.shape[1]), float("-inf"))
        return scores.softmax(dim=1).to(frames.dtype)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bt,btd->bd", self.weights(frames, lengths), frames)


class AttentiveStatsPooling(SelfAttentionPooling):
    """Attentive statistics pooling: attention-weighted mean and standard deviation.

    (B, T, D), (B,) -> (B, 2D).
    """

    def __init__(self, in_dim: int):
        super().__init__(in_dim)
        self.out_dim = 2 * in_dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        w = self.weights(frames, lengths)
        mean = torch.einsum("bt,btd->bd", w, frames)
        var = torch.einsum("bt,btd->bd", w, frames * frames) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=1)


POOLING = {"mean": MeanPooling, "sap": SelfAttentionPooling, "asp": AttentiveStatsPooling}
