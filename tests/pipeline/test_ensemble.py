"""The ensemble stage refuses members that are not tiers, naming the params key."""

import subprocess
import sys

import pytest
import yaml

from tests.conftest import clean_env


@pytest.mark.parametrize("members", [["simple", "nope"], ["simple"]])
def test_bad_members_are_refused_by_name(project, members):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ensemble"]["members"] = members
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.ensemble"],
        check=False,
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "ensemble.members: needs two or more of the tiers" in done.stderr
    assert not (project / "reports/validate/ensemble").exists()
