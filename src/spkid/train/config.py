"""The checked configuration of a training run."""

from dataclasses import dataclass, field
from typing import Literal

from spkid.config import build, check, profiled
from spkid.models import ModelConfig
from spkid.runtime import PRECISIONS


@dataclass(frozen=True)
class SpecAugment:
    """Time and frequency masks (torchaudio's iid masking), filled with ``value``."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0
    value: float = -20.0


@dataclass(frozen=True)
class Recipe:
    """A tier's training recipe.

    Args:
        segment: crop length in frames.
        batch: crops per step (per device).
        lr, weight_decay: AdamW.
        warmup: linear warmup steps, then cosine decay to zero at ``steps``.
        steps: total optimiser steps.
        valid_every: steps between validations (and best-checkpoint updates).
        patience: validations without improvement before stopping early; 0 never stops.
        select: which weights become ``best.pt``, the checkpoint later stages use: best
            (the highest validation top-1, the course's choice) or last (the latest
            validation's, which is the final step's).
        log_every: steps between logged training metrics.
        checkpoint_every: steps between last-checkpoint writes.
        valid_frames: frames per full-length validation batch.
        specaug: SpecAugment masks.
        grad_clip: largest gradient norm before each step (0: no clipping).
        channel: random channel augmentation: each crop's log-mels get a smooth offset over
            the mel axis, the first CHANNEL_TERMS cosines with weights uniform in
            [-channel, channel] (a random gain, tilt and bowl; 0: none).
    """

    segment: int
    batch: int
    lr: float
    weight_decay: float
    warmup: int
    steps: int
    valid_every: int
    patience: int = 0
    select: Literal["best", "last"] = "best"
    log_every: int = 50
    checkpoint_every: int = 500
    valid_frames: int = 65536
    specaug: SpecAugment = field(default_factory=SpecAugment)
    grad_clip: float = 0.0
    channel: float = 0.0

    def __post_init__(self):
        for name in ("segment", "batch", "steps", "valid_every", "log_every", "checkpoint_every"):
            check(getattr(self, name) > 0, f"recipe.{name}", "must be positive")
        check(self.lr > 0, "recipe.lr", f"must be positive, got {self.lr}")
        check(0 <= self.warmup < self.steps, "recipe.warmup", f"must be in [0, steps={self.steps})")
        check(
            not (self.patience and self.select == "last"),
            "recipe.patience",
            "early stopping keeps the best checkpoint: set select: best or patience: 0",
        )
        check(self.grad_clip >= 0, "recipe.grad_clip", "must be >= 0 (0: no clipping)")
        check(self.channel >= 0, "recipe.channel", "must be >= 0 (0: none)")


@dataclass(frozen=True)
class Runtime:
    """The params.yaml ``train`` block: how (not what) every tier trains.

    Args:
        device: auto (cuda when available), cpu, cuda or cuda:N.
        precision: auto (bf16 autocast on GPUs of compute capability 8.0 and up, fp16
            autocast with loss scaling below), bf16, fp16 or fp32; CPU runs float32.
        compile: torch.compile the training step on GPUs (CPU runs stay eager).
        devices: GPUs for data-parallel training through torchrun (1: no torchrun).
        threads: CPU threads for torch (0: torch's default).
    """

    device: str = "auto"
    precision: Literal[PRECISIONS] = "auto"
    compile: bool = False
    devices: int = 1
    threads: int = 0


@dataclass(frozen=True)
class TierConfig:
    """One tier resolved for a profile: its model and recipe."""

    model: ModelConfig
    recipe: Recipe


def resolve_tier(tiers: dict, tier: str, profile: str) -> TierConfig:
    """Tier ``tier`` of the params ``tiers`` block with its ``profile`` overrides merged in.

    Args:
        tiers: {tier: {model: {...}, recipe: {...}, demo: {...}, course: {...}}}.
        tier: the tier's name.
        profile: demo or course: which overrides apply.
    """
    check(tier in tiers, "tiers", f"unknown tier {tier!r}; valid: {sorted(tiers)}")
    return build(TierConfig, profiled(tiers[tier], profile, f"tiers.{tier}"), f"tiers.{tier}")
