"""MLflow tracking: the one module that imports mlflow.

The store is ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` with the
root from ``DVC_ROOT`` (so queued and ``--temp`` experiments log to the main repository);
artifacts go to ``<root>/mlartifacts``, except with a tracking server (an http(s) URI), which
keeps (or proxies) them itself. One run per tier per DVC experiment.
"""

import base64
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import soundfile
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from spkid.data.frontend import FrontEnd
from spkid.data.store import open_store

ARTIFACTS_DIR = "mlartifacts"
DB_FILE = "mlflow.db"
LOCK_FILE = ".mlflow.lock"
MAX_PARAM_LENGTH = 6000
MODEL_REQUIREMENTS = ("torch", "torchaudio", "numpy", "pandas", "soundfile", "mlflow")
MODEL_NAME = "model"  # the pyfunc model's name in its run: runs:/<id>/model
CHAMPION = "champion"  # the registered model's alias for the best version so far
EXAMPLE_SECONDS = 0.5  # the input example's clip
EXAMPLE_HZ = 220.0
DIGEST_LENGTH = 36  # MLflow's dataset digest column


def tracking_uri(root) -> str:
    """The tracking URI for repository ``root`` (``MLFLOW_TRACKING_URI`` wins)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / DB_FILE}"


@contextmanager
def _locked(root):
    """An exclusive file lock: MLflow's first use of a fresh SQLite store races."""
    with open(Path(root) / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def experiment_id(root, name: str) -> str:
    """Point MLflow at ``root``'s store and return experiment ``name``'s id, creating it
    under a lock the first time: with an absolute artifact location for a local store, with
    the server's own (e.g. proxied ``mlflow-artifacts:``) for a tracking server."""
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    with _locked(root):
        client = MlflowClient()
        found = client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        server = uri.startswith(("http://", "https://"))
        location = None if server else (Path(root).resolve() / ARTIFACTS_DIR).as_uri()
        return client.create_experiment(name, artifact_location=location)


def flatten(data: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def git_commit(cwd) -> str:
    """HEAD's commit in ``cwd``, or "" outside git."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def exp_name() -> str:
    """The DVC experiment running this stage ("workspace" outside one)."""
    return os.environ.get("DVC_EXP_NAME", "workspace")


def dvc_tags(tier: str, stage: str, digest: str, cwd) -> dict:
    """The run's tags from DVC's environment."""
    return {
        "tier": tier,
        "dvc.exp_name": exp_name(),
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", git_commit(cwd)),
        "mlflow.source.git.commit": git_commit(cwd),
        "data.digest": digest,
    }


SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "audio", required=False),
            ColSpec(Array(Array("double")), "features", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec("string", "speaker"),
            ColSpec("double", "probability"),
            ColSpec(Array("string"), "top_k_speakers"),
            ColSpec(Array("double"), "top_k_probabilities"),
        ]
    ),
    params=ParamSchema([ParamSpec("top_k", "long", 5)]),
)


class StoreDataset(MetaDataset):
    """A part of a feature store as an MLflow dataset: its counts are the profile."""

    def __init__(self, source, name: str, digest: str, profile: dict):
        super().__init__(source, name=name, digest=digest)
        self._profile = profile

    @property
    def profile(self) -> dict:
        return self._profile

    def to_dict(self) -> dict:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def store_dataset(store, store_dir, indices, context: str) -> StoreDataset:
    """Utterances ``indices`` of ``store``: named ``<source>/<context>``, digested from the
    store's digest and the indices (at most MLflow's 36 characters), profiled by counts."""
    indices = np.asarray(indices, dtype=np.int64)
    digest = hashlib.sha256(store.meta["digest"].encode() + indices.tobytes()).hexdigest()
    profile = {
        "utterances": len(indices),
        "speakers": len(np.unique(store.labels[indices])),
        "frames": int(store.lengths[indices].sum()),
        "source": json.dumps(store.meta["source"]),
    }
    with warnings.catch_warnings():  # a local path: two equal candidates, either will do
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(store_dir).resolve()))
    name = f"{store.meta['source']['name']}/{context}"
    return StoreDataset(source, name, digest[:DIGEST_LENGTH], profile)


def example_audio(sample_rate: int) -> str:
    """Base64 of a short WAV tone: the logged input example's ``audio``."""
    t = np.arange(int(EXAMPLE_SECONDS * sample_rate)) / sample_rate
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * EXAMPLE_HZ * t), sample_rate, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def log_pyfunc(checkpoints: list, frontend: dict) -> None:
    """Log the active run's pyfunc model (spkid/serve/pyfunc.py, from code): the checkpoint
    files and the front-end settings as artifacts, spkid as its code, with signature, input
    example and requirements.

    Args:
        checkpoints: checkpoint files (several: an ensemble averaging their log-probabilities).
        frontend: the training store's ``meta["frontend"]``.
    """
    code = Path(__file__).resolve().parent
    requirements = [f"{p}=={version(p)}" for p in MODEL_REQUIREMENTS]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "frontend.json"
        settings.write_text(json.dumps(frontend))
        artifacts = {f"checkpoint_{i}": str(p) for i, p in enumerate(checkpoints)}
        example = pd.DataFrame(
            {"audio": [example_audio(frontend.get("sample_rate", FrontEnd.sample_rate))]}
        )
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(code / "serve" / "pyfunc.py"),
            artifacts={**artifacts, "frontend": str(settings)},
            code_paths=[str(code)],
            signature=SIGNATURE,
            input_example=(example, {"top_k": 5}),
            pip_requirements=requirements,
        )


def load_identifier(uri: str):
    """The Identifier inside the pyfunc model at ``uri`` (models:/..., runs:/...), from the
    store of ``MLFLOW_TRACKING_URI`` or of the current folder."""
    mlflow.set_tracking_uri(tracking_uri(Path.cwd()))
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().identifier


class Run:
    """An MLflow run that drops metric steps it already holds (so a resumed training
    never duplicates a step).

    Args:
        run_id: the active run.
        logged_until: the highest metric step already in the run (-1: none).
    """

    def __init__(self, run_id: str, logged_until: int = -1):
        self.run_id = run_id
        self.logged_until = logged_until
        self.client = MlflowClient()

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Log ``metrics`` at ``step`` unless an earlier attempt already did."""
        if step > self.logged_until:
            mlflow.log_metrics(metrics, step=step, run_id=self.run_id)

    def log_params(self, params: dict) -> None:
        mlflow.log_params(
            {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(params).items()}, run_id=self.run_id
        )

    def log_artifact(self, path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_dict(self, data, name: str) -> None:
        mlflow.log_dict(data, name, run_id=self.run_id)

    def log_model(self, checkpoints: list, frontend: dict) -> None:
        """The pyfunc model of ``checkpoints`` (see log_pyfunc) in this run; with the onnx
        dependency group installed, also each network as ``onnx/<checkpoint>.onnx``."""
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            log_pyfunc(checkpoints, frontend)
        if importlib.util.find_spec("onnxscript") is None:
            return
        from spkid.serve.onnx import export_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            for path in map(Path, checkpoints):
                export_checkpoint(path, Path(tmp) / f"{path.stem}.onnx")
                self.log_artifact(Path(tmp) / f"{path.stem}.onnx", "onnx")

    def log_data(self, store_dir, split: dict) -> None:
        """The training store's ``train`` and ``valid`` parts as MLflow dataset inputs
        (contexts training and validation; see store_dataset)."""
        store = open_store(store_dir)
        for part, context in (("train", "training"), ("valid", "validation")):
            dataset = store_dataset(store, store_dir, split[part], context)
            tags = {"data.digest": store.meta["digest"], "source": store.meta["source"]["name"]}
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                mlflow.log_input(dataset, context=context, tags=tags)

    def history(self, prefix: str) -> tuple:
        """Metrics named ``prefix/*`` by step: (names, rows of [step, values...])."""
        run = self.client.get_run(self.run_id)
        names = sorted(k for k in run.data.metrics if k.startswith(prefix + "/"))
        table = {}
        for i, key in enumerate(names):
            for m in self.client.get_metric_history(self.run_id, key):
                table.setdefault(m.step, [None] * len(names))[i] = m.value
        return [n.split("/", 1)[1] for n in names], [[s, *table[s]] for s in sorted(table)]


class NullRun:
    """The tracker of ranks other than 0: logs nothing."""

    run_id = None

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass


def _exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def _last_step(run_id: str) -> int:
    client = MlflowClient()
    run = client.get_run(run_id)
    steps = [m.step for key in run.data.metrics for m in client.get_metric_history(run_id, key)]
    return max(steps, default=-1)


@contextmanager
def tier_run(
    root,
    experiment: str,
    tier: str,
    stage: str,
    digest: str,
    run_id: str | None = None,
    system_metrics: bool = True,
):
    """Start (or, given ``run_id``, resume) the tier's run; yield a Run.

    Args:
        root: the repository root holding the store.
        experiment: MLflow experiment name.
        tier: the tier (tag and part of the run name).
        stage: the DVC stage name.
        digest: the data digest tag.
        run_id: resume this run instead of starting one.
        system_metrics: log CPU/GPU/memory usage (psutil; pynvml on GPU).
    """
    exp = experiment_id(root, experiment)
    if run_id and not _exists(run_id):
        run_id = None  # the store changed since the interrupted training: start a new run
    name = f"{exp_name()}/{tier}"
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else exp,
        run_name=None if run_id else name,
        log_system_metrics=system_metrics,
    ) as active:
        mlflow.set_tags(dvc_tags(tier, stage, digest, Path.cwd()))
        yield Run(active.info.run_id, _last_step(active.info.run_id) if run_id else -1)


def connect(root, run_id: str) -> Run:
    """A Run handle on an existing run (validate and predict write into train's run)."""
    mlflow.set_tracking_uri(tracking_uri(root))
    return Run(run_id)


def log_stage_run(
    root,
    experiment: str,
    stage: str,
    metrics: dict,
    files: list,
    checkpoints: tuple = (),
    store_meta: dict | None = None,
) -> None:
    """One ``<exp>/<stage>`` run (tier tag ``stage``) holding ``metrics`` and ``files``: the
    stages that have no training run of their own (compare, ensemble); with ``checkpoints``
    (and their training store's meta.json) also their pyfunc model and the data digest tag."""
    exp = experiment_id(root, experiment)
    with mlflow.start_run(
        experiment_id=exp, run_name=f"{exp_name()}/{stage}", log_system_metrics=False
    ):
        mlflow.set_tags({"tier": stage, "dvc.exp_name": exp_name(), "dvc.stage": stage})
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))
        if checkpoints:
            mlflow.set_tag("data.digest", store_meta["digest"])
            log_pyfunc(list(checkpoints), store_meta["frontend"])


def log_comparison(root, experiment: str, rows: list, files: list) -> None:
    """One ``<exp>/compare`` run holding every tier's figures and the comparison files."""
    metrics = {f"{r['tier']}/{k}": r[k] for r in rows for k in ("top1", "macro_f1")}
    log_stage_run(root, experiment, "compare", metrics, files)


def _rank(row: dict) -> tuple:
    """Better first when sorted descending: higher valid top-1, then fewer parameters."""
    return (row["top1"], -row["parameters"])


def _latest_run(experiment: str, tier: str) -> str:
    """The latest run of ``tier`` in this DVC experiment (the ensemble stage's)."""
    exp = MlflowClient().get_experiment_by_name(experiment).experiment_id
    runs = MlflowClient().search_runs(
        [exp],
        f"tags.tier = '{tier}' and tags.`dvc.exp_name` = '{exp_name()}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ValueError(f"no MLflow run of {tier!r} in experiment {exp_name()!r} to register")
    return runs[0].info.run_id


def register_champion(root, experiment: str, name: str, rows: list, run_ids: dict):
    """Register the best tier of ``rows`` as model ``name`` with alias ``champion``, unless
    the current champion is at least as good (valid top-1, ties: fewer parameters).

    Args:
        root: the repository root holding the store.
        experiment: MLflow experiment name.
        name: the registered model.
        rows: compare's rows (tier, top1, parameters).
        run_ids: tier -> its training run (a tier without one: its latest stage run).

    Returns:
        the new ModelVersion, or None when the champion stays.
    """
    experiment_id(root, experiment)
    client = MlflowClient()
    best = max(rows, key=_rank)
    try:
        held = client.get_model_version_by_alias(name, CHAMPION).tags
        if (float(held["valid.top1"]), -int(held["parameters"])) >= _rank(best):
            return None
    except mlflow.exceptions.MlflowException:
        pass  # no champion yet
    run_id = run_ids.get(best["tier"]) or _latest_run(experiment, best["tier"])
    tags = {
        "tier": best["tier"],
        "dvc.exp_name": exp_name(),
        "data.digest": client.get_run(run_id).data.tags.get("data.digest", ""),
        "valid.top1": str(best["top1"]),
        "parameters": str(best["parameters"]),
    }
    version = mlflow.register_model(f"runs:/{run_id}/{MODEL_NAME}", name, tags=tags)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return version
