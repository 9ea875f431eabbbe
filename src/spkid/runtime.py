"""Where and how tensors run, for training and evaluation alike: the device, the precision
rule and its autocast, a store's utterances resident on the device (random crops, padded
full-length batches) and full-length inference over them."""

import contextlib

import numpy as np
import torch

from spkid.config import check
from spkid.data.store import FeatureStore

PAD_VALUE = -20.0  # the log floor; padding never reaches a result
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
BF16_CAPABILITY = (8, 0)  # Ampere and later have bf16 matrix units
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def check_device(name: str) -> None:
    """Fail naming ``train.device`` when it names no device of this machine.

    Args:
        name: auto, cpu, cuda or cuda:N.
    """
    kind, _, index = name.partition(":")
    valid = name in ("auto", "cpu", "cuda") or kind == "cuda" and index.isdigit()
    check(valid, "train.device", f"{name!r} is not one of auto, cpu, cuda, cuda:N")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check(
            int(index or 0) < count,
            "train.device",
            f"{name!r} asks for a GPU, but this machine has {count} CUDA device(s); use auto or cpu",
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run on ``device`` uses: float32 on CPUs whatever was asked; ``auto``
    is bf16 on GPUs of compute capability 8.0 and up, fp16 (with a GradScaler) below.

    Args:
        precision: one of PRECISIONS.
        device: where the run computes.

    Returns:
        bf16, fp16 or fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    if device.type != "cuda":
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.get_device_capability(device) >= BF16_CAPABILITY else "fp16"
    return precision


def autocast(device: torch.device, precision: str, cache: bool = True):
    """Autocast to the resolved ``precision`` on CUDA; float32 (no context) elsewhere.

    Args:
        cache: autocast's weight-cast cache; off inside a CUDA graph capture.
    """
    if device.type == "cuda" and precision in AUTOCAST_DTYPES:
        return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[precision], cache_enabled=cache)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 training (a no-op scaler for every other precision)."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")


class DeviceData:
    """The frames of some utterances of a store, resident on ``device``.

    Args:
        store: the feature store.
        indices: (U,) utterances taken from it.
        device: where the frames live (the whole set is moved once).
        speaker2id: the model's class ids (labels -1 for speakers it lacks); None: the
            store's own mapping.
    """

    def __init__(
        self,
        store: FeatureStore,
        indices: np.ndarray,
        device: torch.device,
        speaker2id: dict | None = None,
    ):
        indices = np.asarray(indices, dtype=np.int64)
        lengths = store.lengths[indices]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = np.concatenate(
            [np.arange(o, o + n) for o, n in zip(store.offsets[indices], lengths)]
            or [np.zeros(0, np.int64)]
        )
        self.frames = torch.from_numpy(np.ascontiguousarray(store.frames[rows])).to(
            device
        )  # (F, n_mels) f16
        self.offsets = torch.from_numpy(offsets).to(device)
        self.lengths = torch.from_numpy(lengths).to(device)
        labels = store.labels[indices]
        if speaker2id is not None:
            labels = np.array([speaker2id.get(store.speakers[i], -1) for i in indices], np.int64)
        self.labels = torch.from_numpy(labels).to(device)
        self.uids = [store.uids[i] for i in indices]
        self.device = device

    def __len__(self) -> int:
        return len(self.lengths)

    def draw_crops(self, batch: int, generator: torch.Generator) -> tuple:
        """Random crops' draws: (utterance (batch,) int64, start fraction (batch,) uniform in
        [0, 1)); ``cut`` makes the crops. No host synchronisation (a CUDA graph holds it)."""
        idx = torch.randint(len(self), (batch,), device=self.device, generator=generator)
        return idx, torch.rand(batch, device=self.device, generator=generator)

    def cut(self, idx: torch.Tensor, u: torch.Tensor, segment: int) -> tuple:
        """The crops that ``draw_crops``'s draws pick: a random crop of each utterance (the
        whole utterance where shorter, padded); no random draw, so torch.compile fuses it.
        -> feats (B, segment, n_mels) float32, lengths (B,), labels (B,)."""
        lengths = self.lengths[idx]
        room = (lengths - segment).clamp(min=0) + 1
        start = (u * room).long()
        steps = torch.arange(segment, device=self.device)
        return (
            self._gather(self.offsets[idx] + start, lengths.clamp(max=segment), steps),
            lengths.clamp(max=segment),
            self.labels[idx],
        )

    def _gather(
        self, starts: torch.Tensor, lengths: torch.Tensor, steps: torch.Tensor
    ) -> torch.Tensor:
        """Frames starts[b] + steps for lengths[b] steps, PAD_VALUE after. -> (B, S, n_mels)."""
        valid = steps[None, :] < lengths[:, None]  # (B, S)
        rows = torch.where(valid, starts[:, None] + steps[None, :], 0)
        feats = self.frames[rows].float()
        return feats.masked_fill(~valid[..., None], PAD_VALUE)

    def full_batches(self, max_frames: int):
        """Every utterance at full length, longest first, in padded batches.

        Args:
            max_frames: batch size times padded length stays within this (one
                utterance per batch at least).

        Yields:
            (index (B,) into this set, feats (B, T, n_mels) float32, lengths (B,)).
        """
        order = torch.argsort(self.lengths, descending=True, stable=True)
        sorted_lengths = self.lengths[order].tolist()  # one read: the batches never wait
        i = 0
        while i < len(order):
            longest = sorted_lengths[i]
            size = max(1, max_frames // max(longest, 1))
            index = order[i : i + size]
            lengths = self.lengths[index]
            steps = torch.arange(longest, device=self.device)
            yield index, self._gather(self.offsets[index], lengths, steps), lengths
            i += size


@torch.no_grad()
def predict_logits(
    model,
    data: DeviceData,
    max_frames: int,
    precision: str = "fp32",
    crops: int = 0,
    segment: int = 0,
) -> torch.Tensor:
    """Scores of every utterance of ``data``, in its order, in padded batches (never batch 1).

    Args:
        model: ``model(feats, lengths) -> (B, C)``.
        data: the utterances.
        max_frames: frames per padded batch.
        precision: one of PRECISIONS, resolved for the data's device.
        crops: 0 scores the full utterance; N > 0 averages the softmax of N evenly
            spaced crops of ``segment`` frames (the full utterance where shorter).
        segment: crop length for ``crops``.

    Returns:
        (U, C) float32 log-probabilities on the data's device.
    """
    precision = resolve_precision(precision, data.device)
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
