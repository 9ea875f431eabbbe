"""The pipeline's own stages on the HW4-shaped synthetic set with the course profile, each
tier's steps cut: confirms bench/course.py's per-step figures inside the pipeline.

A scratch project (this checkout's pipeline/ and params.yaml with source hw4, profile
course and ``--steps`` steps a tier) runs the stage commands dvc.yaml runs:
``python -m pipeline.features``, ``python -m pipeline.split`` and
``python -m pipeline.train <tier>`` with MLflow logging on (the project's SQLite store),
one tier after another alone on the GPU. Each tier's steps/s is its training's own
``train/segments_per_s`` log (models/<tier>/metrics.jsonl: every log_every steps) over the
windows from step ``--skip`` on (compilation and capture come before), divided by the batch;
``--course`` (bench/course.py's results of the same lease) adds the ratio to its figure.

Usage: python bench/course_pipeline.py --data /tmp/hw4 --work /tmp/course_pipeline \
    --steps 3000 --course /tmp/course.json --out reports/bench/course_pipeline.json
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.course import TIERS
from bench.speed import ROOT, device_info, save
from spkid.data.hw4 import make_synthetic_hw4


def make_project(root: Path, data: Path, steps: int, tiers: list) -> None:
    """This checkout's stages and params.yaml in ``root``: source hw4 at ``data``, profile
    course, every tier cut to ``steps`` steps (its valid_every and log_every kept)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copytree(
        ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "course"
    params["source"].update(name="hw4", dir=str(data))
    for tier in tiers:
        params["tiers"][tier]["recipe"]["steps"] = steps
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage(root: Path, args: list, log: Path) -> float:
    """Run ``python -m pipeline.<args>`` in ``root``; its wall seconds (output to ``log``)."""
    paths = [str(root), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-m", f"pipeline.{args[0]}", *args[1:]],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode:
        raise RuntimeError(f"pipeline.{' '.join(args)} failed: {log.read_text()[-3000:]}")
    return time.perf_counter() - start


def logged_rates(metrics_file: Path, batch: int, skip: int) -> list:
    """Steps/s of each logged training window ending after step ``skip``."""
    rates = []
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        rate = row["metrics"].get("train/segments_per_s")
        if rate is not None and row["step"] > skip:
            rates.append(rate / batch)
    return rates


def tier_result(root: Path, tier: str, seconds: float, skip: int, course: dict) -> dict:
    """The pipeline's figures for ``tier`` beside bench/course.py's (``course``: its runs)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    batch = params["tiers"][tier]["recipe"]["batch"]
    rates = logged_rates(root / "models" / tier / "metrics.jsonl", batch, skip)
    summary = json.loads((root / "reports" / "train" / tier / "summary.json").read_text())
    result = {
        "tier": tier,
        "batch": batch,
        "stage_s": seconds,
        "windows": len(rates),
        "steps_per_s_median": statistics.median(rates),
        "steps_per_s_mean": len(rates) / sum(1 / r for r in rates),  # over equal windows
        "train_seconds": summary["train_seconds"],
        "run_id": summary["run_id"],
    }
    reference = course.get(tier, {}).get("steps_per_s")
    if reference:
        result["course_py_steps_per_s"] = reference
        result["ratio_to_course_py"] = result["steps_per_s_median"] / reference
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="HW4 folder (generated if missing)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for the project")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--tiers", default=TIERS)
    ap.add_argument("--steps", type=int, default=3000, help="training steps per tier")
    ap.add_argument("--skip", type=int, default=500, help="windows up to this step left out")
    ap.add_argument("--course", type=Path, help="bench/course.py's results of the same lease")
    args = ap.parse_args()
    tiers = args.tiers.split(",")
    course = json.loads(args.course.read_text())["runs"] if args.course else {}
    if not (args.data / "metadata.json").exists():
        make_synthetic_hw4(args.data)
    root = args.work / "project"
    make_project(root, args.data, args.steps, tiers)
    results = {"info": device_info(), "steps": args.steps, "skip": args.skip, "tiers": {}}
    results["features_s"] = stage(root, ["features"], args.work / "features.log")
    results["split_s"] = stage(root, ["split"], args.work / "split.log")
    for tier in tiers:
        seconds = stage(root, ["train", tier], args.work / f"train_{tier}.log")
        results["tiers"][tier] = tier_result(root, tier, seconds, args.skip, course)
        print(tier, results["tiers"][tier], flush=True)
        save(args.out, results)


if __name__ == "__main__":
    main()
