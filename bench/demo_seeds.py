"""Does the demo's tier order hold from one seed to the next? The whole demo pipeline
(`dvc repro` in a fresh copy of this commit's tracked files) for several seeds, ``seed`` and
``source.demo.seed`` set together, then the intended order checked on each:

- simple clearly below boss: McNemar p < 0.05 on the paired valid utterances, boss ahead;
- beyond and the ensemble at least boss (top-1 >= boss's).

Usage: python bench/demo_seeds.py [--seeds 0 1 2] [--out reports/bench/demo_seeds.json]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from spkid.atomic import write_json
from spkid.evaluate.compare import SIGNIFICANCE, mcnemar, paired, read_correct, wilson

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("simple", "medium", "strong", "boss", "beyond", "tdnn", "ensemble")
AT_LEAST_BOSS = ("beyond", "ensemble")


def sh(cmd: list, cwd: Path) -> None:
    """Run ``cmd`` in ``cwd`` with that copy's own src/ on PYTHONPATH; fail with its output."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy logs into its own mlflow.db
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{cmd} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def copy_project(dest: Path, seed: int) -> Path:
    """This commit's tracked files in ``dest`` as a fresh git + DVC repository, seeded."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x"], cwd=dest, input=archive.stdout, check=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["seed"] = params["source"]["demo"]["seed"] = seed
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        sh(cmd, dest)
    sh(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", f"seed {seed}"], dest)
    return dest


def seed_figures(project: Path) -> dict:
    """Each tier's valid top-1 with its Wilson interval, and the order's checks."""
    reports = project / "reports" / "validate"
    sources = {t: reports / t / "predictions.csv" for t in TIERS}
    right = paired({t: read_correct(f) for t, f in sources.items()}, list(TIERS), sources)
    tiers = {}
    for t, r in right.items():
        low, high = wilson(int(r.sum()), len(r))
        tiers[t] = {"top1": float(r.mean()), "low": low, "high": high}
    boss_vs_simple = mcnemar(right["boss"], right["simple"])
    checks = {
        "simple_clearly_below_boss": boss_vs_simple["p"] < SIGNIFICANCE
        and boss_vs_simple["a_only"] > boss_vs_simple["b_only"],
        **{f"{t}_at_least_boss": tiers[t]["top1"] >= tiers["boss"]["top1"] for t in AT_LEAST_BOSS},
    }
    return {
        "utterances": len(right["boss"]),
        "tiers": tiers,
        "boss_vs_simple": boss_vs_simple,
        "checks": checks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "demo_seeds.json"))
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    runs = {}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            project = copy_project(Path(work) / f"seed{seed}", seed)
            c0 = time.perf_counter()
            sh([sys.executable, "-m", "dvc", "repro"], project)
            runs[seed] = {"repro_seconds": time.perf_counter() - c0, **seed_figures(project)}
            print(f"seed {seed}: {runs[seed]['checks']}", flush=True)
    ranges = {
        t: [
            min(r["tiers"][t]["top1"] for r in runs.values()),
            max(r["tiers"][t]["top1"] for r in runs.values()),
        ]
        for t in TIERS
    }
    write_json(
        args.out,
        {
            "commit": commit,
            "seeds": runs,
            "top1_range": ranges,
            "order_holds": all(all(r["checks"].values()) for r in runs.values()),
        },
    )


if __name__ == "__main__":
    main()
