"""The whole of params.yaml, checked: one frozen dataclass per block, ``Params`` on top.

Blocks whose settings a library function takes whole keep their dataclass beside it
(``source``: SourceConfig, ``features.frontend``: FrontEnd, ``split``: SplitConfig,
``train``: Runtime, a tier's model and recipe: TierConfig, ``verify``: VerifyConfig); the
rest live here. ``Paths`` is the one place where
output paths are joined. The blocks defined here have no defaults: params.yaml names
every key.
"""

from dataclasses import dataclass
from pathlib import Path

from spkid.checkpoint import BEST
from spkid.config import PROFILES, build, check, profiled
from spkid.data.frontend import FrontEnd
from spkid.data.sources import SourceConfig
from spkid.data.split import SplitConfig
from spkid.data.store import ON_ERROR
from spkid.evaluate.verification import VerifyConfig
from spkid.train.config import Runtime, TierConfig, resolve_tier
from spkid.train.run import RUN_ID_FILE

SUMMARY_FILE = "summary.json"  # a tier's training summary, beside its curves
SUBMISSION_FILE = "submission.csv"
ENSEMBLE = "ensemble"  # the ensemble's name where tiers are named (reports, tables)


@dataclass(frozen=True)
class Paths:
    """The ``paths`` block: where the stages write, and every path joined below it.

    Args:
        features: the feature stores' folder (train/ and test/).
        split: the split's JSON file.
        models: the tiers' checkpoint folders (models/<tier>/).
        reports: metrics, curves, submissions and the tier table.
        embed: the tiers' embedding folders (embed/<tier>/).
    """

    features: str
    split: str
    models: str
    reports: str
    embed: str

    def __post_init__(self):
        for name in ("features", "split", "models", "reports", "embed"):
            check(bool(getattr(self, name)), f"paths.{name}", "must not be empty")

    @property
    def train_store(self) -> Path:
        return Path(self.features) / "train"

    @property
    def test_store(self) -> Path:
        return Path(self.features) / "test"

    @property
    def split_counts(self) -> Path:
        """The split stage's metrics (utterances per side, speakers)."""
        return Path(self.reports) / "split.json"

    def tier_models(self, tier: str) -> Path:
        """A tier's checkpoints, run id and settings."""
        return Path(self.models) / tier

    def best(self, tier: str) -> Path:
        """The checkpoint later stages use (see ``recipe.select``)."""
        return self.tier_models(tier) / BEST

    def run_id(self, tier: str) -> Path:
        """The file holding a tier's MLflow run id (the ensemble's: the ensemble stage's run,
        beside its validation reports)."""
        if tier == ENSEMBLE:
            return self.validate_reports(ENSEMBLE) / RUN_ID_FILE
        return self.tier_models(tier) / RUN_ID_FILE

    def train_reports(self, tier: str) -> Path:
        """A tier's training summary and curves."""
        return Path(self.reports) / "train" / tier

    def validate_reports(self, tier: str) -> Path:
        """A tier's (or the ensemble's) validation metrics and plots."""
        return Path(self.reports) / "validate" / tier

    def embeddings(self, tier: str) -> Path:
        """A tier's embedding folder (valid, held-out and test utterances)."""
        return Path(self.embed) / tier

    def verify_reports(self, tier: str) -> Path:
        """A tier's verification and open-set metrics and DET curve."""
        return Path(self.reports) / "verify" / tier

    def submission(self, tier: str) -> Path:
        """A tier's (or the ensemble's) Kaggle submission."""
        return Path(self.reports) / "predict" / tier / SUBMISSION_FILE

    @property
    def comparison(self) -> tuple[Path, Path]:
        """The tier table and its figure (markdown, png)."""
        return Path(self.reports) / "tiers.md", Path(self.reports) / "tiers.png"


@dataclass(frozen=True)
class Features:
    """The ``features`` block.

    Args:
        on_error: fail (stop at the first bad input) or skip (list it in meta.json).
        workers: processes; 0: every core.
        frontend: the audio front end's settings.
    """

    on_error: str
    workers: int
    frontend: FrontEnd

    def __post_init__(self):
        check(
            self.on_error in ON_ERROR,
            "features.on_error",
            f"{self.on_error!r} is not one of {list(ON_ERROR)}",
        )
        check(
            self.workers >= 0,
            "features.workers",
            f"must be >= 0 (0: every core), got {self.workers}",
        )


@dataclass(frozen=True)
class Mlflow:
    """The ``mlflow`` block: the experiment every run is logged to; ``onnx``: each training
    also logs its network as ONNX (where the onnx extra is installed)."""

    experiment: str
    onnx: bool = True

    def __post_init__(self):
        check(bool(self.experiment), "mlflow.experiment", "must not be empty")


@dataclass(frozen=True)
class Ensemble:
    """The ``ensemble`` block: the tiers whose log-probabilities are averaged (two or more)."""

    members: tuple[str, ...]


@dataclass(frozen=True)
class Evaluate:
    """The ``evaluate`` block: how validate, predict and ensemble score.

    Args:
        max_frames: frames per padded full-length batch.
        test_crops: 0: full length; N: average N crops of ``crop_segment`` frames.
        crop_segment: frames per test crop.
    """

    max_frames: int
    test_crops: int
    crop_segment: int

    def __post_init__(self):
        for name in ("max_frames", "crop_segment"):
            value = getattr(self, name)
            check(value > 0, f"evaluate.{name}", f"must be positive, got {value}")
        check(
            self.test_crops >= 0,
            "evaluate.test_crops",
            f"must be >= 0 (0: full length), got {self.test_crops}",
        )


@dataclass(frozen=True)
class Compare:
    """The ``compare`` block: the MLflow registered model the best tier becomes (alias
    ``champion``) and the course's public Kaggle score per tier (accuracies)."""

    registered_model: str
    course_kaggle: dict[str, float]

    def __post_init__(self):
        check(bool(self.registered_model), "compare.registered_model", "must not be empty")
        for tier, score in self.course_kaggle.items():
            check(
                0.0 <= score <= 1.0,
                f"compare.course_kaggle.{tier}",
                f"must be in [0, 1], got {score}",
            )


@dataclass(frozen=True)
class Params:
    """params.yaml.

    Args:
        profile: demo or course: which of each tier's overrides apply.
        seed: the base seed (split, training).
        paths, source, features, split, train, mlflow, ensemble, evaluate, verify, compare:
            the blocks, as above (split resolved for the profile).
        tiers: {tier: {model, recipe, demo, course}}, each checked when ``Params`` is built.
    """

    profile: str
    seed: int
    paths: Paths
    source: SourceConfig
    features: Features
    split: SplitConfig
    train: Runtime
    mlflow: Mlflow
    tiers: dict
    ensemble: Ensemble
    evaluate: Evaluate
    verify: VerifyConfig
    compare: Compare

    def __post_init__(self):
        check(
            self.profile in PROFILES, "profile", f"{self.profile!r} is not one of {list(PROFILES)}"
        )
        check(self.seed >= 0, "seed", f"must be >= 0 (numpy's seeds are), got {self.seed}")
        check(bool(self.tiers), "tiers", "needs at least one tier")
        check(ENSEMBLE not in self.tiers, f"tiers.{ENSEMBLE}", "the name is the ensemble stage's")
        for tier, block in self.tiers.items():
            check(isinstance(block, dict), f"tiers.{tier}", f"expected a mapping, got {block!r}")
            self.tier(tier)
        members = self.ensemble.members
        check(
            len(set(members)) == len(members) >= 2 and set(members) <= set(self.tiers),
            "ensemble.members",
            f"needs two or more of the tiers {sorted(self.tiers)}, each once, got {list(members)!r}",
        )
        unknown = sorted(set(self.compare.course_kaggle) - set(self.tiers))
        check(
            not unknown,
            "compare.course_kaggle",
            f"unknown tier(s) {unknown}; valid: {sorted(self.tiers)}",
        )

    def tier(self, name: str) -> TierConfig:
        """Tier ``name`` with this profile's overrides merged in."""
        return resolve_tier(self.tiers, name, self.profile)


def parse_params(data) -> Params:
    """params.yaml's plain data (as yaml.safe_load gives it) to ``Params``.

    The ``split`` block's profile overrides (``split.demo``, ``split.course``) are merged in
    first, for ``profile``.

    Raises:
        ConfigError: an unknown key or a bad value, named by its dotted path.
    """
    if isinstance(data, dict) and isinstance(data.get("split"), dict):
        block = data["split"]
        base = {k: v for k, v in block.items() if k not in PROFILES}
        build(SplitConfig, base, "split")  # a bad base value fails whichever profile overrides it
        data = {**data, "split": profiled(block, data.get("profile"), "split")}
    return build(Params, data)
