"""Speaker classifiers: encoder -> pooling -> [embedding] -> head."""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from spkid.config import check
from spkid.models.encoders import ConformerEncoder, TransformerEncoder
from spkid.models.heads import MarginHead, MLPHead
from spkid.models.pooling import POOLING

ENCODERS = {"transformer": TransformerEncoder, "conformer": ConformerEncoder}
HEADS = ("mlp", "bn_mlp", "amsoftmax", "aamsoftmax")


@dataclass(frozen=True)
class ModelConfig:
    """A tier's ``model`` block.

    Args:
        encoder: transformer or conformer.
        d_model, layers, heads, ffn, dropout: encoder size.
        prenet: the encoder's input layer: linear (a Linear per frame, default) or conv (two
            3x3 Conv2d over time and mel, mel stride 2, then a Linear).
        kernel: Conformer depthwise kernel (odd).
        aggregate: Conformer: pool every layer's output, concatenated (MFA-Conformer).
        pooling: mean, sap (self-attention) or asp (attentive statistics).
        embedding: width of a Linear embedding layer before the head; 0 for none.
        head: mlp (course sample), bn_mlp (with BatchNorm), amsoftmax, aamsoftmax.
        scale, margin: the margin heads' s and m.
    """

    encoder: Literal["transformer", "conformer"]
    d_model: int
    layers: int
    heads: int
    ffn: int
    dropout: float
    pooling: Literal["mean", "sap", "asp"]
    head: Literal["mlp", "bn_mlp", "amsoftmax", "aamsoftmax"]
    prenet: Literal["linear", "conv"] = "linear"
    kernel: int = 31
    aggregate: bool = False
    embedding: int = 0
    scale: float = 30.0
    margin: float = 0.35

    def __post_init__(self):
        check(
            self.d_model % self.heads == 0,
            "model",
            f"d_model {self.d_model} not divisible by heads {self.heads}",
        )
        check(
            not self.aggregate or self.encoder == "conformer",
            "model.aggregate",
            "needs the conformer encoder",
        )
        check(self.kernel % 2 == 1, "model.kernel", f"must be odd, got {self.kernel}")
        check(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")


class SpeakerNet(nn.Module):
    """Encoder, pooling, optional embedding layer and head.

    Args:
        cfg: the model block.
        n_mels: input feature width.
        n_classes: number of speakers.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int, n_classes: int):
        super().__init__()
        kwargs = {
            "n_mels": n_mels,
            "d_model": cfg.d_model,
            "layers": cfg.layers,
            "heads": cfg.heads,
            "ffn": cfg.ffn,
            "dropout": cfg.dropout,
            "prenet": cfg.prenet,
        }
        if cfg.encoder == "conformer":
            kwargs.update(kernel=cfg.kernel, aggregate=cfg.aggregate)
        self.encoder = ENCODERS[cfg.encoder](**kwargs)
        self.pooling = POOLING[cfg.pooling](self.encoder.out_dim)
        width = self.pooling.out_dim
        self.embedding = nn.Linear(width, cfg.embedding) if cfg.embedding else nn.Identity()
        width = cfg.embedding or width
        if cfg.head in ("mlp", "bn_mlp"):
            self.head = MLPHead(width, n_classes, batchnorm=cfg.head == "bn_mlp")
        else:
            kind = "additive" if cfg.head == "amsoftmax" else "angular"
            self.head = MarginHead(width, n_classes, cfg.scale, cfg.margin, kind)

    def embed(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, n_mels), lengths (B,) -> (B, E) utterance embeddings."""
        frames, lengths = self.encoder(feats, lengths)
        return self.embedding(self.pooling(frames, lengths))

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """feats (B, T, n_mels), lengths (B,), labels (B,) or None -> logits (B, n_classes).

        With labels a margin head applies its margin (training); without, plain scores.
        """
        return self.head(self.embed(feats, lengths), labels)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
