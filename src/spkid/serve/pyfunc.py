"""The MLflow pyfunc model of a tier (or an ensemble), logged from code (no pickled classes).

This file and tracking.py are the only ones that import mlflow: MLflow's models-from-code
loads this file itself (``mlflow.models.set_model`` at the bottom), so the model class must
live in a file of its own. Its artifacts are checkpoint files (``checkpoint_<i>``, rebuilt by
spkid.checkpoint) and ``frontend`` (the training store's front-end settings, JSON); the
spkid package travels beside it as the model's code.

Input: a DataFrame with a column ``audio`` (a file path, or base64-encoded WAV/FLAC/OGG bytes)
or ``features`` (a (frames, n_mels) array, as nested lists). Params: ``top_k`` (default 5).
Output: one row per input: ``speaker``, ``probability``, ``top_k_speakers``,
``top_k_probabilities``.

Open set (as ``identify --bank``, through Identifier.open_set): params ``bank`` (an enrolment
bank file of this model, made by ``enroll``), ``threshold`` (a cosine; default the bank's
stored one, else 0.5) and ``with_classes`` (the trained speakers are candidates too). Output
then: ``speaker`` (or ``unknown``), ``kind`` (enrolled, trained or unknown), ``score`` (the
best cosine), ``top_k_speakers``, ``top_k_kinds``, ``top_k_scores``.

Bad input raises MlflowException (INVALID_PARAMETER_VALUE: HTTP 400) naming the row and the
reason; so does a bank that is missing, not a bank, or another model's.
"""

import base64
import binascii
import json
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from spkid.data.errors import InputError
from spkid.evaluate.bank import BankError
from spkid.serve.identifier import Identifier, checked_bank, threshold_for

CHECKPOINT_ARTIFACT = "checkpoint_{}"
FRONTEND_ARTIFACT = "frontend"
INPUT_COLUMNS = ("audio", "features")
DEFAULT_TOP_K = 5
MAX_PATH = 4096  # longer strings are taken for base64 audio, not paths


def decode_audio(value: str):
    """``value`` as a path, unless it names no file and decodes as base64: then the bytes."""
    if len(value) <= MAX_PATH and Path(value).is_file():
        return value
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return value


def bad_input(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class SpeakerModel(PythonModel):
    """Top-k speakers of audio or features (see the module docstring)."""

    def load_context(self, context):
        paths = sorted((k, v) for k, v in context.artifacts.items() if k.startswith("checkpoint_"))
        with open(context.artifacts[FRONTEND_ARTIFACT]) as f:
            frontend = json.load(f)
        self.identifier = Identifier.from_checkpoints([v for _, v in paths], frontend)

    def features(self, model_input: pd.DataFrame) -> list:
        """One (frames, n_mels) array per row, or MlflowException naming the bad row."""
        column = next((c for c in INPUT_COLUMNS if c in model_input.columns), None)
        if column is None:
            raise bad_input(
                f"input needs a column {' or '.join(INPUT_COLUMNS)}, got {list(model_input.columns)}"
            )
        out = []
        for i, value in enumerate(model_input[column]):
            try:
                if column == "features":
                    out.append(self.identifier.check_features(value, f"row {i}"))
                elif not isinstance(value, str):
                    raise InputError(f"row {i}", "audio must be a path or base64 text")
                else:
                    out.append(self.identifier.audio(decode_audio(value), f"row {i}"))
            except InputError as error:
                raise bad_input(f"{column} {error}") from None
        return out

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        params = params or {}
        k = int(params.get("top_k", DEFAULT_TOP_K))
        if k < 1:
            raise bad_input(f"top_k must be >= 1, got {k}")
        if params.get("bank"):
            return self.open_set(model_input, params, k)
        if params.get("with_classes"):
            raise bad_input("with_classes needs a bank")
        rankings = self.identifier.rank(self.identifier.log_probs(self.features(model_input)), k)
        return pd.DataFrame(
            {
                "speaker": [r.speakers[0] for r in rankings],
                "probability": [r.probabilities[0] for r in rankings],
                "top_k_speakers": [r.speakers for r in rankings],
                "top_k_probabilities": [r.probabilities for r in rankings],
            }
        )

    def open_set(self, model_input: pd.DataFrame, params: dict, k: int) -> pd.DataFrame:
        """The answers among the bank's speakers (and the trained ones, ``with_classes``)."""
        try:
            bank = checked_bank(params["bank"], self.identifier)
            threshold = threshold_for(bank, params.get("threshold"))
            with_classes = bool(params.get("with_classes"))
            if with_classes:
                self.identifier.class_centres()  # refused before the input is read
            features = self.features(model_input)
            answers = self.identifier.open_set(bank, features, k, threshold, with_classes)
        except (BankError, FileNotFoundError) as error:
            raise bad_input(f"bank: {error}") from None
        return pd.DataFrame(
            {
                "speaker": [a.speaker for a in answers],
                "kind": [a.kind for a in answers],
                "score": [a.score for a in answers],
                "top_k_speakers": [[name for name, _k, _s in a.top] for a in answers],
                "top_k_kinds": [[kind for _n, kind, _s in a.top] for a in answers],
                "top_k_scores": [[s for _n, _k, s in a.top] for a in answers],
            }
        )


set_model(SpeakerModel())
