"""Heads: ``forward(embedding, labels=None) -> logits``."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Module):
    """The course sample's head: Linear - [BatchNorm] - ReLU - Linear.

    Args:
        in_dim: embedding width.
        n_classes: speakers.
        batchnorm: add BatchNorm1d after the first Linear (the tuned-transformer head).
    """

    def __init__(self, in_dim: int, n_classes: int, batchnorm: bool = False):
        super().__init__()
        norm = nn.BatchNorm1d(in_dim) if batchnorm else nn.Identity()
        self.net = nn.Sequential(
            nn.Linear(in_dim, in_dim), norm, nn.ReLU(), nn.Linear(in_dim, n_classes)
        )

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_dim) -> (B, n_classes)."""
        return self.net(embedding)


class MarginHead(nn.Module):
    """Cosine classifier with a margin on the target logit (training only).

    additive (AM-softmax): s * (cos - m) on the target, s * cos elsewhere.
    angular (AAM, ArcFace): s * cos(theta + m) on the target.

    Args:
        in_dim: embedding width.
        n_classes: speakers.
        scale: s.
        margin: m.
        kind: "additive" or "angular".
    """

    def __init__(self, in_dim: int, n_classes: int, scale: float, margin: float, kind: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin, self.kind = scale, margin, kind

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, n_classes) cosine similarity to each class weight."""
        return F.linear(
            F.normalize(embedding.float(), dim=1), F.normalize(self.weight.float(), dim=1)
        )

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_dim), (B,) or None -> (B, n_classes) scaled logits, float32 (no autocast:
        the margin arithmetic is sensitive to bf16 rounding)."""
        with torch.autocast(embedding.device.type, enabled=False):
            return self._logits(embedding, labels)

    def _logits(self, embedding: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        cos = self.cosine(embedding)
        if labels is None:
            return self.scale * cos
        target = cos.gather(1, labels[:, None])
        if self.kind == "additive":
            marked = target - self.margin
        else:
            theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
            marked = torch.where(
                theta + self.margin < math.pi,
                torch.cos(theta + self.margin),
                target - self.margin * math.sin(self.margin),
            )
        return self.scale * cos.scatter(1, labels[:, None], marked)
