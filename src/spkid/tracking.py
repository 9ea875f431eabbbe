"""MLflow tracking: the one module that imports mlflow.

The store is ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` with the
root from ``DVC_ROOT`` (so queued and ``--temp`` experiments log to the main repository);
artifacts go to ``<root>/mlartifacts``, except with a tracking server (an http(s) URI), which
keeps (or proxies) them itself. One run per tier per DVC experiment.

A training does not wait on the store (TrainingRun): its metrics are kept in a local metric
log in the tier's folder and sent with MLflow's async logging, HTTP retries bounded
(HTTP_LIMITS). A store that is away when the training starts delays only the run's creation
(the run id is resolved when it is first reachable, params logged then); one that goes away
mid-training gets what waited when it is back, no step missing or twice. Still away when the
training ends, the stage fails naming the URI after FINISH_TIMEOUT_S, everything saved; the
next run of the stage resumes the finished training (no steps), sends what waits, and logs
the checkpoints and the model. System metrics are sampled only while the run is open.
"""

import base64
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pandas as pd
import soundfile
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from spkid.atomic import write_text
from spkid.data.frontend import FrontEnd
from spkid.data.store import open_store

ARTIFACTS_DIR = "mlartifacts"
DB_FILE = "mlflow.db"
LOCK_FILE = ".mlflow.lock"
MAX_PARAM_LENGTH = 6000
MODEL_REQUIREMENTS = ("torch", "torchaudio", "numpy", "pandas", "soundfile", "tqdm", "mlflow")
MODEL_NAME = "model"  # the pyfunc model's name in its run: runs:/<id>/model
CHAMPION = "champion"  # the registered model's alias for the best version so far
# MLflow copies the uv.lock and pyproject.toml of the folder it logs from into the model, and its
# uv env manager then restores the model's environment with `uv sync`, which fails building
# spkid from a folder without its sources: the model's requirements.txt and code are its own
NO_UV_FILES = {"MLFLOW_LOG_UV_FILES": "false"}
EXAMPLE_SECONDS = 0.5  # the input example's clip
EXAMPLE_HZ = 220.0
DIGEST_LENGTH = 36  # MLflow's dataset digest column
BATCH_METRICS = 1000  # MLflow's log_batch limit
RETRY_S = 10.0  # seconds before an unreachable store is tried again
FINISH_TIMEOUT_S = 30.0  # how long the end of a training waits for the store
HTTP_LIMITS = {  # MLflow's HTTP retries for a training (defaults: 7 retries, 120 s timeout)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


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
    outputs=Schema(  # the trained speakers' probabilities, or with a bank the open set's cosines
        [
            ColSpec("string", "speaker"),
            ColSpec("double", "probability", required=False),
            ColSpec("string", "kind", required=False),
            ColSpec("double", "score", required=False),
            ColSpec(Array("string"), "top_k_speakers"),
            ColSpec(Array("double"), "top_k_probabilities", required=False),
            ColSpec(Array("string"), "top_k_kinds", required=False),
            ColSpec(Array("double"), "top_k_scores", required=False),
        ]
    ),
    params=ParamSchema(  # bank, threshold, with_classes: serve/pyfunc.py's open set
        [
            ParamSpec("top_k", "long", 5),
            ParamSpec("bank", "string", ""),
            ParamSpec("threshold", "double", None),
            ParamSpec("with_classes", "boolean", False),
        ]
    ),
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
        with mock.patch.dict(os.environ, NO_UV_FILES):
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
    """An MLflow run, logged to synchronously (validate and predict write into train's run).

    Args:
        run_id: the run.
        onnx: log_model also exports each network to ONNX (with the onnx extra installed).
    """

    def __init__(self, run_id: str, onnx: bool = True):
        self.run_id, self.onnx = run_id, onnx
        self.client = MlflowClient()

    def log_metrics(self, metrics: dict, step: int) -> None:
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
        """The pyfunc model of ``checkpoints`` (see log_pyfunc) in this run; with ``onnx``
        and the onnx dependency group installed, also each network as
        ``onnx/<checkpoint>.onnx``."""
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            log_pyfunc(checkpoints, frontend)
        if not self.onnx or importlib.util.find_spec("onnxscript") is None:
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


class NullRun:
    """The tracker interface, logging nothing: ranks other than 0, and library calls made
    without a store (tests, benchmarks)."""

    run_id = None

    def log_metrics(self, metrics: dict, step: int) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def log_artifact(self, path, folder: str | None = None) -> None:
        pass

    def log_data(self, store_dir, split: dict) -> None:
        pass

    def log_model(self, checkpoints: list, frontend: dict) -> None:
        pass


class MetricLog:
    """A training's metrics as JSON lines, one ``{"step", "time", "metrics"}`` per call:
    written before anything is sent, so nothing is lost while the tracking store is away.
    A resumed training's steps that are already here are dropped (per key), so no step is
    logged twice; the curves are read from here.

    Args:
        path: the file (in the tier's checkpoint folder; created on the first line).
    """

    def __init__(self, path):
        self.path = Path(path)
        text = self.path.read_text() if self.path.exists() else ""
        self.lines = [json.loads(line) for line in text.splitlines()]
        self.last = {}  # key -> highest step held
        for line in self.lines:
            self._note(line)

    def _note(self, line: dict) -> None:
        for key in line["metrics"]:
            self.last[key] = max(self.last.get(key, -1), line["step"])

    def append(self, metrics: dict, step: int) -> bool:
        """Keep the ``metrics`` at ``step`` this log lacks; True when there were any."""
        new = {k: float(v) for k, v in metrics.items() if step > self.last.get(k, -1)}
        if not new:
            return False
        line = {"step": step, "time": int(time.time() * 1000), "metrics": new}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.lines.append(line)
        self._note(line)
        return True

    def batch(self, start: int) -> tuple:
        """(MLflow metrics of the lines from ``start``, at most BATCH_METRICS, whole lines
        only, the index after the last line taken)."""
        out, end = [], start
        while end < len(self.lines):
            line = self.lines[end]
            if out and len(out) + len(line["metrics"]) > BATCH_METRICS:
                break
            out += [Metric(k, v, line["time"], line["step"]) for k, v in line["metrics"].items()]
            end += 1
        return out, end

    def history(self, prefix: str) -> tuple:
        """Metrics named ``prefix/*`` by step: (names, rows of [step, values...])."""
        names = sorted({k for k in self.last if k.startswith(prefix + "/")})
        table = {}
        for line in self.lines:
            for i, key in enumerate(names):
                if key in line["metrics"]:
                    row = table.setdefault(line["step"], [None] * len(names))
                    row[i] = line["metrics"][key]
        return [n.split("/", 1)[1] for n in names], [[s, *table[s]] for s in sorted(table)]


class TrackingUnavailable(RuntimeError):
    """The tracking store stayed unreachable: what was logged waits in the metric log."""


class TrainingRun(Run):
    """A training's run that a tracking outage does not stop.

    Metrics go to ``log`` first, then to MLflow with its async logging, one batch in flight
    at a time (MLflow's HTTP retries bounded by HTTP_LIMITS); a failed batch stays pending
    and is sent again RETRY_S later. Resent metrics keep their first timestamps, and MLflow
    drops a metric (key, step, time, value) it already holds, so a batch that arrived
    although its answer was lost is never duplicated. The run itself is opened (resumed or
    created) when the store is first reachable: a store down at the start delays only that.
    Params wait for the run too; ``finish`` sends everything or raises TrackingUnavailable.

    Args:
        log: the training's MetricLog.
        open_run: () -> run id: resumes or creates the run (MlflowException while away).
        uri: the tracking URI, for messages.
        root: the repository root, whose lock serialises the logging of dataset inputs.
        onnx: as Run's.
    """

    def __init__(self, log: MetricLog, open_run, uri: str, root, onnx: bool = True):
        super().__init__(None, onnx)
        self.log, self.open_run, self.uri, self.root = log, open_run, uri, root
        self.params, self.sent, self.in_flight = None, 0, None
        self.retry_at, self.away, self.error = 0.0, False, ""
        self.waiter = ThreadPoolExecutor(1, thread_name_prefix="metric-batches")

    def log_metrics(self, metrics: dict, step: int) -> None:
        if self.log.append(metrics, step):
            self._send()

    def log_params(self, params: dict) -> None:
        self.params = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(params).items()}
        self._send()

    def log_artifact(self, path, folder: str | None = None) -> None:
        self.finish()
        super().log_artifact(path, folder)

    def log_model(self, checkpoints: list, frontend: dict) -> None:
        self.finish()
        super().log_model(checkpoints, frontend)

    def log_data(self, store_dir, split: dict) -> None:
        self.finish()
        with _locked(self.root):  # a sweep's trainings log one dataset: MLflow looks it up,
            super().log_data(store_dir, split)  # then inserts it (a UNIQUE constraint race)

    def history(self, prefix: str) -> tuple:
        return self.log.history(prefix)

    def _send(self) -> None:
        """Collect the job in flight; start the next one (open the run and log the params,
        or send the next pending metrics). Never waits on the store."""
        if self.in_flight:
            future, end = self.in_flight
            if not future.done():
                return
            self.in_flight = None
            if future.exception():
                return self._lost(future.exception())
            self.sent = end
            self._back()
        if time.monotonic() < self.retry_at:
            return
        if self.run_id is None or self.params:
            self.in_flight = (self.waiter.submit(self._open), self.sent)
        elif self.sent < len(self.log.lines):
            metrics, end = self.log.batch(self.sent)
            operations = self.client.log_batch(self.run_id, metrics=metrics, synchronous=False)
            self.in_flight = (self.waiter.submit(operations.wait), end)

    def _open(self) -> None:
        """Open the run and log the params (in the waiter's thread)."""
        if self.run_id is None:
            self.run_id = self.open_run()
        params = self.params
        if params:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
            if self.params is params:
                self.params = None

    def _lost(self, err) -> None:
        self.retry_at = time.monotonic() + RETRY_S
        self.error = str(err)[:300]
        if not self.away:
            print(
                f"tracking store {self.uri} unreachable ({self.error}): training goes on; "
                f"metrics wait in {self.log.path} and are sent when it is back",
                file=sys.stderr,
            )
        self.away = True

    def _back(self) -> None:
        if self.away:
            print(f"tracking store {self.uri} reached again: metrics sent", file=sys.stderr)
        self.away = False

    def finish(self, timeout: float = FINISH_TIMEOUT_S) -> None:
        """Send the params and every metric, waiting up to ``timeout`` seconds for the store."""
        deadline = time.monotonic() + timeout
        while self.run_id is None or self.params or self.sent < len(self.log.lines):
            left = deadline - time.monotonic()
            if left < 0:
                raise TrackingUnavailable(
                    f"the tracking store {self.uri} is unreachable ({self.error}); training is "
                    f"saved (the checkpoints and {self.log.path}): run the stage again when the "
                    "store is back, it sends what waits and finishes the run without training"
                )
            if self.in_flight:
                wait([self.in_flight[0]], timeout=left)
            else:
                time.sleep(max(0.0, min(left, self.retry_at - time.monotonic())))
            self._send()


def _exists(run_id: str) -> bool:
    """Whether the store holds ``run_id`` (raises while the store is away)."""
    try:
        MlflowClient().get_run(run_id)
        return True
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False


def _open_run(root, experiment: str, tier: str, stage: str, digest: str, run_file: Path) -> str:
    """Resume the run named in ``run_file`` or create one (and name it there)."""
    client = MlflowClient()
    tags = dvc_tags(tier, stage, digest, Path.cwd())
    run_id = run_file.read_text().strip() if run_file.exists() else None
    if run_id and _exists(run_id):
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return run_id
    name = f"{exp_name()}/{tier}"
    run_id = client.create_run(
        experiment_id(root, experiment), tags=resolve_tags(tags), run_name=name
    )
    write_text(run_file, run_id.info.run_id)
    return run_id.info.run_id


@contextmanager
def tier_run(
    root,
    experiment: str,
    tier: str,
    stage: str,
    digest: str,
    run_file,
    metric_file,
    system_metrics: bool = True,
    onnx: bool = True,
):
    """The tier's TrainingRun: resumes the run named in ``run_file`` (else creates one and
    names it there), when the store is reachable; metrics wait in ``metric_file``. The run
    is finished when the block ends (FAILED on an exception).

    Args:
        root: the repository root holding the store.
        experiment: MLflow experiment name.
        tier: the tier (tag and part of the run name).
        stage: the DVC stage name.
        digest: the data digest tag.
        run_file: the file holding the run id (in the tier's checkpoint folder).
        metric_file: the training's MetricLog file (beside it).
        system_metrics: log CPU/GPU/memory usage (psutil; pynvml on GPU) once the run is open.
        onnx: the logged model's networks also as ONNX (params.yaml's ``mlflow.onnx``).
    """
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if not uri.startswith(("http://", "https://")):  # a local store is never away: create it
        experiment_id(root, experiment)  # under the lock, before a client races to migrate it
    monitors = []

    def open_run() -> str:
        run_id = _open_run(root, experiment, tier, stage, digest, Path(run_file))
        if system_metrics:
            monitors.append(SystemMetricsMonitor(run_id, resume_logging=True))
            monitors[-1].start()
        return run_id

    run = TrainingRun(MetricLog(metric_file), open_run, uri, root, onnx)
    status = "FAILED"
    try:
        yield run
        run.finish()
        status = "FINISHED"
    finally:
        for monitor in monitors:
            monitor.finish()
        if run.run_id:
            with suppress(MlflowException, OSError):
                MlflowClient().set_terminated(run.run_id, status)


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
) -> str:
    """One ``<exp>/<stage>`` run (tier tag ``stage``) holding ``metrics`` and ``files``: the
    stages that have no training run of their own (compare, ensemble); with ``checkpoints``
    (and their training store's meta.json) also their pyfunc model and the data digest tag.

    Returns:
        the run's id.
    """
    exp = experiment_id(root, experiment)
    with mlflow.start_run(
        experiment_id=exp, run_name=f"{exp_name()}/{stage}", log_system_metrics=False
    ) as run:
        mlflow.set_tags({"tier": stage, "dvc.exp_name": exp_name(), "dvc.stage": stage})
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))
        if checkpoints:
            mlflow.set_tag("data.digest", store_meta["digest"])
            log_pyfunc(list(checkpoints), store_meta["frontend"])
    return run.info.run_id


def log_comparison(root, experiment: str, rows: list, files: list) -> None:
    """One ``<exp>/compare`` run holding every tier's figures and the comparison files."""
    keys = ("top1", "top1_low", "top1_high", "mcnemar_p", "macro_f1")
    keys += ("eer", "mindcf_p01", "mindcf_p05")  # verification (None: no held-out speakers)
    metrics = {f"{r['tier']}/{k}": r[k] for r in rows for k in keys if r[k] is not None}
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
