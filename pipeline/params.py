"""The one reader of params.yaml: each stage takes its checked blocks from here."""

import os
from pathlib import Path

import yaml

from spkid.params import Params, parse_params

ROOT = Path(__file__).resolve().parent.parent


def load_params(path=None) -> Params:
    """params.yaml (``path`` defaults to the repo root's), every block checked.

    Raises:
        ConfigError: an unknown key or a bad value, named by its dotted path.
    """
    with open(path or ROOT / "params.yaml") as f:
        return parse_params(yaml.safe_load(f))


def repo_root() -> Path:
    """The repository root: ``DVC_ROOT`` when DVC runs the stage, else this checkout."""
    return Path(os.environ.get("DVC_ROOT", ROOT))
