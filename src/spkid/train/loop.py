"""The training loop: crops on the device, AdamW with warmup and cosine, validation,
early stopping, and checkpoints that resume exactly. On one GPU the whole step (crops,
augmentation, forward, loss, backward, optimiser) is one captured CUDA graph."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from spkid import checkpoint
from spkid.evaluate.metrics import classification_metrics
from spkid.models import SpeakerNet
from spkid.runtime import DeviceData, autocast, grad_scaler, predict_logits, resolve_precision
from spkid.train.config import SpecAugment, TierConfig
from spkid.train.distributed import broadcast_flag, gather_ranks

CAPTURE_AFTER = 3  # eager steps before capture: compilation, optimiser state, cuBLAS workspaces


@dataclass
class State:
    """What a resume needs beyond weights and optimiser."""

    step: int = 0
    best_top1: float = -1.0  # validation top-1 and step of best.pt (recipe.select)
    best_step: int = 0
    bad_validations: int = 0
    train_seconds: float = 0.0


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine to 0 at ``total`` (the course's
    get_cosine_schedule_with_warmup)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _masks(cfg: SpecAugment) -> list:
    """(width, axis of the (B, M, T) view) of each mask, frequency masks first."""
    freq = [(cfg.freq_width, 1)] * (cfg.freq_masks if cfg.freq_width else 0)
    return freq + [(cfg.time_width, 2)] * (cfg.time_masks if cfg.time_width else 0)


def draw_masks(batch: int, cfg: SpecAugment, generator: torch.Generator, device) -> list:
    """SpecAugment's random part: one (2, batch) uniform draw per mask."""
    return [torch.rand(2, batch, device=device, generator=generator) for _ in _masks(cfg)]


def apply_masks(feats: torch.Tensor, cfg: SpecAugment, draws: list) -> torch.Tensor:
    """SpecAugment: independent time and frequency masks per crop, placed by
    ``draw_masks``'s draws (no random draw here: torch.compile fuses it).
    feats (B, T, M) -> (B, T, M)."""
    x = feats.transpose(1, 2)  # (B, M, T): torchaudio's (..., freq, time)
    for (width, axis), u in zip(_masks(cfg), draws):
        x = _mask(x, width, axis, cfg.value, u)
    return x.transpose(1, 2)


def _mask(x: torch.Tensor, width: int, axis: int, value: float, u: torch.Tensor) -> torch.Tensor:
    """One mask of up to ``width`` along ``axis`` per row, placed by draws ``u`` (2, B)."""
    size = x.shape[axis]
    w = (u[0] * width).long()
    start = (u[1] * (size - w).clamp(min=1)).long()
    pos = torch.arange(size, device=x.device)[None, :]
    hit = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
    hit = hit[:, None, :] if axis == 2 else hit[:, :, None]
    return x.masked_fill(hit, value)


CHANNEL_TERMS = 3  # apply_channel's cosines: gain, tilt, bowl


def draw_channel(batch: int, generator: torch.Generator, device) -> torch.Tensor:
    """The random recording channel's draws: (batch, CHANNEL_TERMS) uniform in [0, 1)."""
    return torch.rand(batch, CHANNEL_TERMS, device=device, generator=generator)


def apply_channel(feats: torch.Tensor, strength: float, u: torch.Tensor) -> torch.Tensor:
    """A random smooth log-spectral offset per crop, as a recording channel adds one:
    sum_k w_k cos(pi k (m + 1/2) / M) for k < CHANNEL_TERMS, w_k = (2 u_k - 1) strength
    uniform in [-strength, strength] for ``draw_channel``'s draws u (B, CHANNEL_TERMS).
    No random draw here, so torch.compile fuses it. feats (B, T, M) -> (B, T, M)."""
    mels = feats.shape[2]
    k = torch.arange(CHANNEL_TERMS, device=feats.device)[:, None]
    basis = torch.cos(torch.pi * k * (torch.arange(mels, device=feats.device) + 0.5) / mels)
    return feats + ((2 * u - 1) * strength @ basis)[:, None, :]


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy and top-1 of logits (B, C) against labels (B,) -> (2,)."""
    loss = F.cross_entropy(logits.float(), labels)
    return torch.stack([loss, (logits.argmax(1) == labels).float().mean()])


class Trainer:
    """Trains one SpeakerNet on device-resident data.

    Args:
        config: the tier's model and recipe.
        train: training utterances.
        valid: validation utterances.
        speaker2id: the label mapping (stored in checkpoints).
        out_dir: checkpoint folder (``last.pt``, ``best.pt``).
        log: ``log(metrics: dict, step: int)``, e.g. the MLflow logger.
        seed: base seed (crops, masks, initialisation).
        precision: auto, bf16, fp16 (with loss scaling) or fp32 (runtime.resolve_precision;
            CPU runs float32).
        compile: torch.compile the training step's model on CUDA (1.8x the boss tier on
            an H200); CPU steps stay eager, where compiling costs more than it saves.
        rank, world: data-parallel rank and size (1: plain training).
        model: train this module (same interface) instead of the config's SpeakerNet.
        graph: on CUDA with world 1, replay the whole step as one CUDA graph captured after
            CAPTURE_AFTER eager steps (DDP and CPU runs step eagerly).
    """

    def __init__(
        self,
        config: TierConfig,
        train: DeviceData,
        valid: DeviceData,
        speaker2id: dict,
        out_dir,
        log: Callable,
        seed: int,
        precision: str = "auto",
        compile: bool = False,
        rank: int = 0,
        world: int = 1,
        model: torch.nn.Module | None = None,
        graph: bool = True,
    ):
        self.config, self.recipe = config, config.recipe
        self.train_data, self.valid_data, self.speaker2id = train, valid, speaker2id
        self.out_dir, self.log = Path(out_dir), log
        self.rank, self.world = rank, world
        self.device = train.device
        self.precision = resolve_precision(precision, self.device)
        torch.manual_seed(seed)
        model = model or SpeakerNet(config.model, train.frames.shape[1], len(speaker2id))
        self.model = model.to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed + 1000 * rank)
        cuda = self.device.type == "cuda"
        self.graphed = graph and cuda and world == 1
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.recipe.lr,
            weight_decay=self.recipe.weight_decay,
            fused=cuda,
            capturable=self.graphed,
        )
        self.scaler = grad_scaler(self.device, self.precision)
        self.sums = torch.zeros(2, device=self.device)  # loss, accuracy summed since last log
        self.graph, self.eager_steps = None, 0
        if self.graphed:
            self.lr = torch.zeros((), device=self.device)  # the graph's learning rate
            self.stream = torch.cuda.Stream(self.device)  # eager warm-up and capture
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.recipe.warmup, self.recipe.steps)
        )
        self.state = State()
        self.net = self.model
        if world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None
            )
        fuse = torch.compile if compile and cuda else (lambda fn: fn)
        self.step_fn = fuse(self.net)
        self.augment_fn, self.loss_fn = fuse(self._augment), fuse(loss_and_accuracy)

    # ---- checkpoints -------------------------------------------------------------
    def save(self, name: str, **extra) -> None:
        """Write checkpoint ``name`` (rank 0 only)."""
        if self.rank:
            return
        checkpoint.save(
            self.out_dir / name,
            self.model,
            self.config,
            self.train_data.frames.shape[1],
            self.speaker2id,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            generator=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            **(
                {"cuda_rng": torch.cuda.get_rng_state(self.device)}
                if self.device.type == "cuda"
                else {}
            ),
            state=vars(self.state).copy(),
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            **extra,
        )

    def resume(self) -> bool:
        """Load ``last.pt`` if there is one; True when training continues from it."""
        path = self.out_dir / checkpoint.LAST
        if not path.exists():
            return False
        ckpt = checkpoint.load(path, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:  # this run's kernels, not the saver's
            group.update(fused=self.device.type == "cuda", capturable=self.graphed)
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler.is_enabled() and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.generator.set_state(ckpt["generator"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())  # dropout draws from it (CPU runs)
        if "cuda_rng" in ckpt and self.device.type == "cuda":  # and from this on GPUs
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), self.device)
        self.state = State(**ckpt["state"])
        return True

    # ---- steps -------------------------------------------------------------------
    def train_step(self) -> tuple:
        """One optimiser step on fresh crops, its loss and accuracy added to ``sums`` on the
        device. On one GPU, a replay of the captured step once CAPTURE_AFTER steps ran
        eagerly; the scheduler steps on the host and the graph reads its rate from ``lr``.

        Returns:
            (loss, accuracy) tensors (a graph's outputs: overwritten by the next step).
        """
        if self.graphed and self.graph is None and self.eager_steps >= CAPTURE_AFTER:
            self._capture()
        if self.graph is not None:
            self.lr.fill_(self.optimizer.param_groups[0]["lr"])
            self.graph.replay()
            out = self.outputs
        else:
            out = self._on_capture_stream() if self.graphed else self._step()
            self.eager_steps += 1
        self.scheduler.step()
        return out

    def _step(self) -> tuple:
        """The whole step, with no host synchronisation (a CUDA graph can hold it): the
        random draws from ``generator``, then crops, augmentation, forward and loss (each
        compiled with ``compile`` on CUDA), backward and the optimiser."""
        r = self.recipe
        g, device = self.generator, self.device
        crops = self.train_data.draw_crops(r.batch, g)
        channel = draw_channel(r.batch, g, device) if r.channel else None
        masks = draw_masks(r.batch, r.specaug, g, device)
        feats, lengths, labels = self.augment_fn(crops, channel, masks)
        with autocast(self.device, self.precision, cache=False):
            logits = self.step_fn(feats, lengths, labels)
        out = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out[0]).backward()
        if r.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = out.detach()
        self.sums += out
        return out[0], out[1]

    def _augment(self, crops: tuple, channel, masks: list) -> tuple:
        """Crops, random channel and SpecAugment from their draws (no random draw here).
        -> feats (B, segment, n_mels), lengths (B,), labels (B,)."""
        r = self.recipe
        feats, lengths, labels = self.train_data.cut(*crops, r.segment)
        if channel is not None:
            feats = apply_channel(feats, r.channel, channel)
        return apply_masks(feats, r.specaug, masks), lengths, labels

    def _on_capture_stream(self) -> tuple:
        """An eager step on the capture stream (warm-up as torch.cuda.graphs asks)."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            out = self._step()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def _capture(self) -> None:
        """Record ``_step`` as a CUDA graph. Its random draws come from ``generator`` and the
        default CUDA generator (dropout), both registered so each replay draws afresh; the
        optimiser reads the device tensor ``lr`` while capturing, so the schedule needs no
        recapture; gradients are released first so that the graph owns their memory."""
        groups = self.optimizer.param_groups
        rates = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = self.lr
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.generator)
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.outputs = self._step()
        for g, rate in zip(groups, rates):
            g["lr"] = rate

    def validate(self) -> dict:
        """Full-length metrics on the validation set."""
        logp = predict_logits(self.model, self.valid_data, self.recipe.valid_frames, self.precision)
        return classification_metrics(logp.cpu().numpy(), self.valid_data.labels.cpu().numpy())

    # ---- the loop ----------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``recipe.steps`` (or early stop), validating and checkpointing.

        Returns:
            {"best_top1", "best_step", "steps", "train_seconds", "stopped_early", "ranks"}.
        """
        r, s = self.recipe, self.state
        bar = tqdm(total=r.steps, initial=s.step, desc="train", disable=self.rank != 0)
        since, tick = 0, time.perf_counter()
        stopped = False
        self.model.train()
        self.sums.zero_()
        while s.step < r.steps and not stopped:
            self.train_step()
            s.step, since = s.step + 1, since + 1
            if s.step % r.log_every == 0 or s.step == r.steps:
                self._log_training(self.sums / since, since, tick, bar)
                self.sums.zero_()
                since, tick = 0, time.perf_counter()
            if s.step % r.valid_every == 0 or s.step == r.steps:
                stop = self._validate_and_keep_best() if self.rank == 0 else False
                stopped = broadcast_flag(stop, self.device, self.world)
                tick = time.perf_counter()
            if s.step % r.checkpoint_every == 0 or s.step == r.steps or stopped:
                self.save(checkpoint.LAST)
        bar.close()
        return {
            "best_top1": s.best_top1,
            "best_step": s.best_step,
            "steps": s.step,
            "train_seconds": s.train_seconds,
            "stopped_early": stopped,
            "ranks": gather_ranks(s.step, self.model, self.world),
        }

    def _log_training(self, means: torch.Tensor, steps: int, tick: float, bar) -> None:
        """Log mean loss and accuracy over the last ``steps`` steps (since ``tick``, a
        perf_counter time), and throughput. The read of ``means`` waits for the GPU, so the
        time is the steps' device time, not the host's running ahead of it."""
        loss, acc = means.tolist()
        elapsed = time.perf_counter() - tick
        self.state.train_seconds += elapsed
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} near step {self.state.step}: lower recipe.lr or raise recipe.warmup"
            )
        rate = steps * self.recipe.batch * self.world / elapsed
        lr = self.scheduler.get_last_lr()[0]
        self._log(
            {
                "train/loss": loss,
                "train/accuracy": acc,
                "train/lr": lr,
                "train/segments_per_s": rate,
            },
            self.state.step,
        )
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", seg_s=f"{rate:.0f}")
        bar.update(steps)

    def _log(self, metrics: dict, step: int) -> None:
        if self.rank == 0:
            self.log(metrics, step)

    def _validate_and_keep_best(self) -> bool:
        """Validate, keep best.pt as recipe.select says; True when patience has run out."""
        s = self.state
        metrics = self.validate()
        self._log({f"valid/{k}": v for k, v in metrics.items()}, s.step)
        if self.recipe.select == "last" or metrics["top1"] > s.best_top1:
            s.best_top1, s.best_step, s.bad_validations = metrics["top1"], s.step, 0
            self.save(checkpoint.BEST, valid=metrics)
        else:
            s.bad_validations += 1
        return bool(self.recipe.patience) and s.bad_validations >= self.recipe.patience
