"""Pooling: ``forward(frames, lengths) -> embedding`` with ``out_dim``; padding ignored."""

import torch
from torch import nn

from spkid.models.masking import masked_batch_norm, masked_mean, padding_mask

ATTENTION_CHANNELS = 128  # ChannelAttentiveStatsPooling's bottleneck


class MeanPooling(nn.Module):
    """Average over valid frames. (B, T, D), (B,) -> (B, D)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return masked_mean(frames, padding_mask(lengths, frames.shape[1]))


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
        return torch.cat(weighted_stats(frames, self.weights(frames, lengths)[..., None]), dim=1)


class ChannelAttentiveStatsPooling(nn.Module):
    """ECAPA-TDNN's pooling: attention weights per frame and channel, computed from each
    frame beside the utterance's mean and standard deviation (global context); the weighted
    mean and standard deviation, then BatchNorm1d.

    (B, T, D), (B,) -> (B, 2D).
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.hidden = nn.Linear(3 * in_dim, ATTENTION_CHANNELS)
        self.hidden_norm = nn.BatchNorm1d(ATTENTION_CHANNELS)
        self.score = nn.Linear(ATTENTION_CHANNELS, in_dim)
        self.norm = nn.BatchNorm1d(2 * in_dim)
        self.out_dim = 2 * in_dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pad = padding_mask(lengths, frames.shape[1])  # (B, T)
        uniform = (~pad)[..., None].to(frames.dtype) / lengths.clamp(min=1)[:, None, None]
        mean, std = weighted_stats(frames, uniform)  # (B, D) each
        context = torch.cat([frames, *(s[:, None].expand_as(frames) for s in (mean, std))], -1)
        h = masked_batch_norm(self.hidden_norm, torch.relu(self.hidden(context)), pad)
        scores = self.score(torch.tanh(h)).float().masked_fill(pad[..., None], float("-inf"))
        w = scores.softmax(dim=1).to(frames.dtype)  # (B, T, D), each channel sums to 1
        return self.norm(torch.cat(weighted_stats(frames, w), dim=1))


def weighted_stats(frames: torch.Tensor, w: torch.Tensor) -> tuple:
    """Weighted mean and standard deviation over time: frames (B, T, D), weights (B, T, 1)
    or (B, T, D) summing to 1 over T -> ((B, D), (B, D))."""
    mean = (w * frames).sum(1)
    var = (w * frames * frames).sum(1) - mean * mean
    return mean, var.clamp(min=1e-6).sqrt()


POOLING = {
    "mean": MeanPooling,
    "sap": SelfAttentionPooling,
    "asp": AttentiveStatsPooling,
    "casp": ChannelAttentiveStatsPooling,
}
