"""A store's utterances on one device: random crops and padded full-length batches."""

import numpy as np
import torch

from spkid.data.store import FeatureStore

PAD_VALUE = -20.0  # the log floor; padding never reaches a result


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

    def crops(self, batch: int, segment: int, generator: torch.Generator):
        """Random crops of random utterances (whole utterance where shorter, padded).

        Returns:
            feats (batch, segment, n_mels) float32, lengths (batch,), labels (batch,).
        """
        idx = torch.randint(len(self), (batch,), device=self.device, generator=generator)
        lengths = self.lengths[idx]
        room = (lengths - segment).clamp(min=0) + 1
        start = (torch.rand(batch, device=self.device, generator=generator) * room).long()
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
        i = 0
        while i < len(order):
            longest = int(self.lengths[order[i]])
            size = max(1, max_frames // max(longest, 1))
            index = order[i : i + size]
            lengths = self.lengths[index]
            steps = torch.arange(longest, device=self.device)
            yield index, self._gather(self.offsets[index], lengths, steps), lengths
            i += size
