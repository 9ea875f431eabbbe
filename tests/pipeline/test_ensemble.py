"""The ensemble stage refuses members that are not tiers, naming the params key."""

import sys

import pytest
import yaml

from tests.conftest import attempt


@pytest.mark.parametrize("members", [["simple", "nope"], ["simple"]])
def test_bad_members_are_refused_by_name(project, members):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ensemble"]["members"] = members
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = attempt([sys.executable, "-m", "pipeline.ensemble"], project)
    assert done.returncode != 0
    assert "ensemble.members: needs two or more of the tiers" in done.stderr
    assert not (project / "reports/validate/ensemble").exists()
