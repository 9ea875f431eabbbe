"""MLflow tracking: the one module that imports mlflow.

The store is ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` with the
root from ``DVC_ROOT`` (so queued and ``--temp`` experiments log to the main repository);
artifacts go to ``<root>/mlartifacts``, except with a tracking server (an http(s) URI), which
keeps (or proxies) them itself. One run per tier per DVC experiment.
"""

import fcntl
import os
import subprocess
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

ARTIFACTS_DIR = "mlartifacts"
DB_FILE = "mlflow.db"
LOCK_FILE = ".mlflow.lock"
MAX_PARAM_LENGTH = 6000
MODEL_REQUIREMENTS = ("torch", "torchaudio", "numpy")


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


def dvc_tags(tier: str, stage: str, digest: str, cwd) -> dict:
    """The run's tags from DVC's environment."""
    return {
        "tier": tier,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "workspace"),
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", git_commit(cwd)),
        "mlflow.source.git.commit": git_commit(cwd),
        "data.digest": digest,
    }


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

    def log_model(self, model) -> None:
        """The model in MLflow's pytorch flavour, pickled (not torch.export: lengths vary),
        with spkid's code beside it and its requirements named (no slow inference)."""
        code = str(Path(__file__).resolve().parent)
        requirements = [f"{p}=={version(p)}" for p in MODEL_REQUIREMENTS]
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            mlflow.pytorch.log_model(
                model.cpu(),
                name="model",
                serialization_format="pickle",
                code_paths=[code],
                pip_requirements=requirements,
            )

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
    name = f"{os.environ.get('DVC_EXP_NAME', 'workspace')}/{tier}"
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


def log_stage_run(root, experiment: str, stage: str, metrics: dict, files: list) -> None:
    """One ``<exp>/<stage>`` run (tier tag ``stage``) holding ``metrics`` and ``files``: the
    stages that have no training run of their own (compare, ensemble)."""
    exp = experiment_id(root, experiment)
    exp_name = os.environ.get("DVC_EXP_NAME", "workspace")
    with mlflow.start_run(
        experiment_id=exp, run_name=f"{exp_name}/{stage}", log_system_metrics=False
    ):
        mlflow.set_tags({"tier": stage, "dvc.exp_name": exp_name, "dvc.stage": stage})
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))


def log_comparison(root, experiment: str, rows: list, files: list) -> None:
    """One ``<exp>/compare`` run holding every tier's figures and the comparison files."""
    keys = ("top1", "top1_low", "top1_high", "mcnemar_p", "macro_f1")
    metrics = {f"{r['tier']}/{k}": r[k] for r in rows for k in keys if r[k] is not None}
    log_stage_run(root, experiment, "compare", metrics, files)
