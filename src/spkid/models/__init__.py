"""Speaker classifiers: encoder -> pooling -> [embedding] -> head."""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from spkid.config import check
from spkid.models.ecapa import RES2NET_SCALE, EcapaEncoder
from spkid.models.encoders import ConformerEncoder, TransformerEncoder
from spkid.models.heads import MarginHead, MLPHead
from spkid.models.pooling import POOLING

ENCODERS = {"transformer": TransformerEncoder, "conformer": ConformerEncoder, "ecapa": EcapaEncoder}
HEADS = ("mlp", "bn_mlp", "amsoftmax", "aamsoftmax")


@dataclass(frozen=True)
class ModelConfig:
    """A tier's ``model`` block.

    Args:
        encoder: transformer, conformer or ecapa (ECAPA-TDNN: a convolutional family).
        d_model, layers: encoder width and depth; ecapa: channels (a multiple of
            RES2NET_SCALE) and SE-Res2Net blocks, with d_model * layers output channels.
        heads, ffn, dropout: transformer and conformer only: attention heads,
            feed-forward width, dropout probability.
        prenet: the encoder's input layer: linear (a Linear per frame, default) or conv (two
            3x3 Conv2d over time and mel, mel stride 2, then a Linear).
        kernel: Conformer depthwise kernel (odd).
        aggregate: Conformer: pool every layer's output, concatenated (MFA-Conformer).
        pooling: mean, sap (self-attention), asp (attentive statistics) or casp (ECAPA's
            channel-wise attentive statistics with global context).
        embedding: width of a Linear embedding layer before the head; 0 for none.
        head: mlp (course sample), bn_mlp (with BatchNorm), amsoftmax, aamsoftmax.
        scale, margin: the margin heads' s and m.
    """

    encoder: Literal["transformer", "conformer", "ecapa"]
    d_model: int
    layers: int
    pooling: Literal["mean", "sap", "asp", "casp"]
    head: Literal["mlp", "bn_mlp", "amsoftmax", "aamsoftmax"]
    heads: int = 0
    ffn: int = 0
    dropout: float = 0.0
    prenet: Literal["linear", "conv"] = "linear"
    kernel: int = 31
    aggregate: bool = False
    embedding: int = 0
    scale: float = 30.0
    margin: float = 0.35

    def __post_init__(self):
        if self.encoder == "ecapa":
            check(
                (self.heads, self.ffn, self.dropout, self.prenet) == (0, 0, 0.0, "linear"),
                "model",
                "ecapa takes no heads, ffn, dropout or prenet",
            )
            check(
                self.d_model % RES2NET_SCALE == 0,
                "model.d_model",
                f"ecapa needs a multiple of {RES2NET_SCALE}, got {self.d_model}",
            )
        else:
            check(self.heads > 0 and self.ffn > 0, "model", f"{self.encoder} needs heads and ffn")
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
        kwargs = {"n_mels": n_mels, "d_model": cfg.d_model, "layers": cfg.layers}
        if cfg.encoder != "ecapa":
            kwargs.update(heads=cfg.heads, ffn=cfg.ffn, dropout=cfg.dropout, prenet=cfg.prenet)
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
