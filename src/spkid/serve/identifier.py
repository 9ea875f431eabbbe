"""Speaker identification from audio or log-mel features: the network(s) of one or more
checkpoints, their speakers and the course front end, scoring padded batches grouped by length;
and open-set identification among an enrolment bank's speakers (optionally the trained ones
too), answering "unknown" below a cosine threshold."""

import io
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from spkid import checkpoint
from spkid.data.errors import InputError
from spkid.data.frontend import FrontEnd, audio_features
from spkid.evaluate import bank as banks
from spkid.evaluate.bank import UNKNOWN, BankError, model_digest, normalise
from spkid.evaluate.embed import embed_arrays
from spkid.models.heads import MarginHead

MAX_FRAMES = 65536  # frames per padded batch
MAX_BATCH = 64  # utterances per batch
MIN_FRAMES = 10  # a checkpoint alone: the fewest frames taken (params.yaml's features default)
DEFAULT_THRESHOLD = 0.5  # cosine; a bank without a stored threshold, none given
ENROLLED, TRAINED = "enrolled", "trained"  # the kinds of speaker an open-set answer names


@dataclass
class Ranking:
    """The top-k speakers of one input, most probable first."""

    speakers: list
    probabilities: list


@dataclass(frozen=True)
class Answer:
    """One input's open-set answer.

    Args:
        speaker: the best candidate, or UNKNOWN when its cosine is not above the threshold.
        kind: ENROLLED or TRAINED (the speaker's), or UNKNOWN.
        score: the best cosine (None: no candidate).
        top: [(speaker, kind, cosine)] of the k best candidates, best first.
    """

    speaker: str
    kind: str
    score: float | None
    top: list


def frontend_of(settings: dict, n_mels: int) -> FrontEnd:
    """The FrontEnd of a feature store's ``meta["frontend"]`` settings (the course's defaults
    for those it lacks); its n_mels must be the network's."""
    known = {f.name for f in fields(FrontEnd)}
    fe = FrontEnd(**{k: v for k, v in settings.items() if k in known})
    if fe.n_mels != n_mels:
        raise ValueError(f"front end gives {fe.n_mels} mel bands, the network takes {n_mels}")
    return fe


class Identifier:
    """One network, or several whose log-probabilities are averaged, with their speakers.

    Args:
        models: SpeakerNets in eval mode, ``model(feats (B, T, n_mels), lengths (B,)) -> (B, C)``.
        speakers: the C speaker names, by class index.
        frontend: the settings that turn audio into the networks' features.
    """

    def __init__(self, models: list, speakers: list, frontend: FrontEnd):
        self.models = models
        self.speakers = speakers
        self.frontend = frontend
        self.device = torch.device("cpu")

    @classmethod
    def from_checkpoints(cls, paths: list, frontend: dict | None = None) -> "Identifier":
        """Rebuild the networks of ``paths`` (one speaker mapping) on the CPU.

        Args:
            paths: checkpoint files.
            frontend: the training store's front-end settings (None: the course's, with
                MIN_FRAMES).
        """
        models, mapping = [], None
        for path in paths:
            model, ckpt = checkpoint.load_model(path)
            if mapping is not None and ckpt["speaker2id"] != mapping:
                raise ValueError(f"{path}: its speakers differ from those of {paths[0]}")
            models.append(model)
            mapping = ckpt["speaker2id"]
        speakers = [s for s, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        n_mels = ckpt["model_args"]["n_mels"]
        settings = frontend or {"n_mels": n_mels, "min_frames": MIN_FRAMES}
        return cls(models, speakers, frontend_of(settings, n_mels))

    def to(self, device) -> "Identifier":
        self.device = torch.device(device)
        self.models = [m.to(self.device) for m in self.models]
        return self

    def audio(self, source, name: str | None = None) -> np.ndarray:
        """Log-mel frames of an audio file path or of encoded audio bytes (WAV, FLAC, OGG).

        Returns:
            float32 (frames, n_mels).

        Raises:
            InputError: naming ``name`` (or the path): unreadable, empty, too short.
        """
        if isinstance(source, bytes):
            try:
                return audio_features(io.BytesIO(source), self.frontend)
            except InputError as error:
                raise InputError(name or "audio bytes", error.reason) from None
        if not Path(source).is_file():
            raise InputError(source, "no such file")
        return audio_features(source, self.frontend)

    def check_features(self, features, name: str) -> np.ndarray:
        """``features`` as float32 (frames, n_mels), or InputError naming ``name``."""
        try:
            array = np.asarray(
                [np.asarray(row, dtype=np.float32) for row in features], dtype=np.float32
            )
        except (TypeError, ValueError) as error:
            raise InputError(name, f"features are not a (frames, n_mels) array: {error}") from None
        n_mels, fewest = self.frontend.n_mels, max(self.frontend.min_frames, 1)
        if array.ndim != 2 or array.shape[1] != n_mels:
            raise InputError(name, f"features of shape {array.shape}, need (frames, {n_mels})")
        if len(array) < fewest:
            raise InputError(name, f"too short: {len(array)} frames < {fewest}")
        if not np.isfinite(array).all():
            raise InputError(name, "features hold non-finite values")
        return array

    @torch.no_grad()
    def log_probs(self, features: list, max_frames: int = MAX_FRAMES) -> np.ndarray:
        """Log-probabilities of each utterance, in its order.

        Args:
            features: float32 arrays (frames, n_mels), frames >= 1.
            max_frames: batch size times padded length stays within this.

        Returns:
            float32 (N, C): the mean of the networks' log-probabilities, renormalised.
        """
        out = np.empty((len(features), len(self.speakers)), dtype=np.float32)
        for index in length_batches([len(f) for f in features], max_frames):
            feats, lengths = pad([features[i] for i in index], self.device)
            total = sum(m(feats, lengths).float().log_softmax(-1) for m in self.models)
            out[index] = (total / len(self.models)).log_softmax(-1).cpu().numpy()
        return out

    def embedder(self):
        """The one network whose embeddings an enrolment bank holds (BankError for an
        ensemble: its networks' embeddings live in different spaces)."""
        if len(self.models) != 1:
            raise BankError(
                f"an enrolment bank needs one network's embeddings; this model averages "
                f"{len(self.models)} networks: enrol with one tier's model"
            )
        return self.models[0]

    def model_digest(self) -> str:
        """The digest an enrolment bank records for this (one-network) model."""
        return model_digest(self.embedder())

    def embed(self, features: list) -> np.ndarray:
        """(N, E) float32 L2-normalised embeddings (the head's input) of N feature arrays."""
        return embed_arrays(self.embedder(), features, self.device)

    def class_centres(self) -> np.ndarray:
        """(C, E) float32 unit-length class weights of the network's cosine head: the trained
        speakers as points of the embedding space (BankError for another head)."""
        head = self.embedder().head
        if not isinstance(head, MarginHead):
            raise BankError(
                "scoring the trained speakers needs a cosine head (amsoftmax or aamsoftmax): "
                f"this network's {type(head).__name__} gives its classes no embedding"
            )
        return normalise(head.weight.detach().float().cpu().numpy())

    def open_set(
        self, bank, features: list, top_k: int, threshold: float, with_classes: bool = False
    ) -> list:
        """Open-set identification of N feature arrays: the cosine of each embedding to every
        enrolled speaker's mean (and, ``with_classes``, to every trained speaker's class
        weight); the best candidate above ``threshold``, else UNKNOWN.

        Args:
            bank: an enrolment bank of this network (checked_bank).
            features: float32 (frames, n_mels) arrays.
            top_k: candidates listed per answer.
            threshold: a cosine.
            with_classes: also the trained speakers.

        Returns:
            N Answers.
        """
        centres = self.class_centres() if with_classes else None  # before any work
        emb = self.embed(features)
        scores = banks.score(bank, emb, self.model_digest())  # (N, S)
        names, kinds = [*bank.names], [ENROLLED] * len(bank.names)
        if with_classes:
            scores = np.hstack([scores, normalise(emb) @ centres.T])  # (N, S + C)
            names, kinds = names + self.speakers, kinds + [TRAINED] * len(self.speakers)
        answers = []
        for row, pick in zip(scores, banks.best_above(scores, threshold)):
            top = np.argsort(-row, kind="stable")[:top_k]
            answers.append(
                Answer(
                    names[pick] if pick >= 0 else UNKNOWN,
                    kinds[pick] if pick >= 0 else UNKNOWN,
                    float(row.max()) if len(row) else None,
                    [(names[j], kinds[j], float(row[j])) for j in top],
                )
            )
        return answers

    def rank(self, logp: np.ndarray, k: int) -> list:
        """The top ``k`` speakers of each row of (N, C) log-probabilities, as Rankings."""
        k = min(k, len(self.speakers))
        top = np.argsort(-logp, axis=1, kind="stable")[:, :k]
        probs = np.exp(np.take_along_axis(logp, top, axis=1))
        return [
            Ranking([self.speakers[j] for j in row], [float(p) for p in prob])
            for row, prob in zip(top, probs)
        ]


def checked_bank(path, identifier: Identifier) -> banks.Bank:
    """The bank in ``path``, refused (BankError naming ``path``) if another model's."""
    bank = banks.load_bank(path)
    try:
        banks.check_model(bank, identifier.model_digest(), bank.dim)
    except BankError as err:
        raise BankError(f"{path}: {err}") from None
    return bank


def threshold_for(bank: banks.Bank, threshold: float | None) -> float:
    """``threshold``, or else the bank's stored one, or else DEFAULT_THRESHOLD."""
    if threshold is not None:
        return float(threshold)
    return DEFAULT_THRESHOLD if bank.threshold is None else bank.threshold


def length_batches(lengths: list, max_frames: int = MAX_FRAMES) -> list:
    """Index batches of similar lengths, longest first: batch size times its longest length
    stays within ``max_frames`` (one utterance at least) and MAX_BATCH.

    Returns:
        lists of indices into ``lengths``, covering each once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, i = [], 0
    while i < len(order):
        size = min(MAX_BATCH, max(1, max_frames // max(lengths[order[i]], 1)))
        batches.append(order[i : i + size])
        i += size
    return batches


def pad(features: list, device) -> tuple:
    """Zero-padded batch: (feats (B, T, n_mels) float32, lengths (B,) int64) on ``device``."""
    lengths = torch.tensor([len(f) for f in features])
    feats = torch.zeros(len(features), int(lengths.max()), features[0].shape[1])
    for row, f in enumerate(features):
        feats[row, : len(f)] = torch.from_numpy(np.asarray(f, dtype=np.float32))
    return feats.to(device), lengths.to(device)
