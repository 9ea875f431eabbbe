"""The one reader of params.yaml: each stage takes its blocks from here."""

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_params(path=None) -> dict:
    """params.yaml as plain data (``path`` defaults to the repo root's)."""
    with open(path or ROOT / "params.yaml") as f:
        return yaml.safe_load(f)


def repo_root() -> Path:
    """The repository root: ``DVC_ROOT`` when DVC runs the stage, else this checkout."""
    return Path(os.environ.get("DVC_ROOT", ROOT))
