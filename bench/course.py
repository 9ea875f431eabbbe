"""Each tier's own course recipe (its model, batch and segment) on the HW4-shaped synthetic
set, each in a fresh process, as `-S profile=course` trains it: the captured, compiled step
(train.compile and the CUDA graph, the defaults on one GPU).

Per run: warm-up seconds (compilation, eager steps, capture), steps/s over ``--steps`` timed
steps, peak GPU memory, the mean training loss every LOSS_EVERY steps, one full-length
validation and one test-set prediction timed, kernels per step and GPU busy % over
PROFILED_STEPS steps (torch.profiler), and the projected wall time of the tier's whole
course budget (its steps, a validation every valid_every steps, one prediction).
``--parallel N`` warms N runs up at once (their compilation is CPU work); one
readers-writer lock lets a single run at a time time its steps, and only while no run is
warming up (compilation benchmarks kernels on the GPU and takes the host's cores).
Extra runs: boss forced to fp16 (its loss curve against bf16's), boss at batch 1,024 and segment 128 (bench/speed.py's figure), and on request boss@nograph (compiled, not captured); and the students' per-file pipeline at
batch 32 (bench/speed.py's peer) with the boss model and segment in the same run.

Usage: python bench/course.py --data /tmp/hw4 --work /tmp/course --out reports/bench/course.json
"""

import argparse
import fcntl
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.speed import DEVICE, ROOT, SEGMENT, device_info, ingest, make_trainer, peer, save, sync
from spkid.data.hw4 import make_synthetic_hw4
from spkid.data.split import split_indices
from spkid.data.store import open_store
from spkid.runtime import DeviceData, predict_logits
from spkid.train.config import TierConfig, resolve_tier

TIERS = "simple,medium,strong,boss,beyond,tdnn"
EXTRAS = "boss@fp16,boss@b1024"  # tier@variant runs beside the course recipes (also: @nograph)
LOSS_EVERY = 100
PROFILED_STEPS = 20
VALID_RATIO = 0.1


def course_config(tier: str, batch: int = 0) -> TierConfig:
    """The tier's course recipe; ``batch`` > 0: that batch at bench/speed.py's segment (its
    large-batch figure)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = resolve_tier(params["tiers"], tier, "course")
    if not batch:
        return cfg
    return replace(cfg, recipe=replace(cfg.recipe, batch=batch, segment=SEGMENT))


def run_one(spec: str, store_dir: Path, steps: int, work: Path) -> dict:
    """One course run, ``tier[@fp16|@nograph|@b<batch>]``, in this process."""
    tier, _, variant = spec.partition("@")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    batch = int(variant[1:]) if variant.startswith("b") else 0
    cfg = course_config(tier, batch)
    with open(work / "gpu.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # set-ups and warm-ups (compilation) share it
        start = time.perf_counter()
        store = open_store(store_dir)
        train, valid = split_indices(store.speakers, store.sessions, VALID_RATIO, seed=0)
        t = make_trainer(
            cfg,
            store,
            train,
            valid,
            work / spec,
            compile_model=True,
            precision="fp16" if variant == "fp16" else "auto",
            graph=variant != "nograph",
        )
        setup_s = time.perf_counter() - start
        warm_steps = 10  # past CAPTURE_AFTER: compiled, captured and replayed
        start = time.perf_counter()
        for _ in range(warm_steps):
            t.train_step()
        sync()
        warm_s = time.perf_counter() - start
        fcntl.flock(lock, fcntl.LOCK_UN)
        # The machine to this run alone from here: no other run times its steps, sets up
        # or compiles (compilation benchmarks kernels on the GPU and takes the cores that
        # the host's replays need).
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = timed_part(t, cfg, store_dir, steps)
    return {
        "tier": tier,
        "variant": variant or "course",
        "setup_s": setup_s,
        "warmup_s": warm_s,
        **result,
        "projected_course_s": setup_s + warm_s + result["projected_course_s"],
    }


def timed_part(t, cfg: TierConfig, store_dir: Path, steps: int) -> dict:
    """Steps/s, losses, memory, kernels per step, validation and prediction of trainer ``t``;
    projected_course_s here leaves set-up and warm-up out."""
    t.sums.zero_()
    losses = []
    start = time.perf_counter()
    for i in range(1, steps + 1):
        t.train_step()
        if i % LOSS_EVERY == 0:  # a read every LOSS_EVERY steps, as log_every does
            losses.append(float(t.sums[0]) / LOSS_EVERY)
            t.sums.zero_()
    sync()
    seconds = time.perf_counter() - start
    rate = steps / seconds
    valid_s = timed(t.validate)
    test = open_store(store_dir.with_name("test_store"))
    test_data = DeviceData(test, np.arange(len(test)), DEVICE)
    predict_s = timed(lambda: predict_logits(t.model, test_data, 65536, t.precision).cpu())
    r = cfg.recipe
    projected = r.steps / rate + r.steps // r.valid_every * valid_s + predict_s
    return {
        "batch": r.batch,
        "segment": r.segment,
        "precision": t.precision,
        "graph": t.graph is not None,
        "timed_steps": steps,
        "steps_per_s": rate,
        "segments_per_s": rate * r.batch,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,  # the graph's pool too
        "valid_s": valid_s,
        "predict_s": predict_s,
        "course_steps": r.steps,
        "projected_course_s": projected,
        "loss_every": LOSS_EVERY,
        "losses": losses,
        **kernel_profile(t),
    }


def kernel_profile(t) -> dict:
    """Device activities (kernels, copies, fills) per step and the share of wall time the GPU
    was busy with them, over PROFILED_STEPS steps."""
    from torch.profiler import DeviceType, ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(PROFILED_STEPS):
            t.train_step()
        sync()
        wall = time.perf_counter() - start
    device = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy = sum(e.device_time for e in device) / 1e6  # us -> s
    return {
        "kernels_per_step": len(device) / PROFILED_STEPS,
        "gpu_busy": busy / wall,
        "profiled_steps_per_s": PROFILED_STEPS / wall,
    }


def timed(fn) -> float:
    """Seconds of ``fn()`` (run once before, for its compilation and caches)."""
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def start_fresh_process(spec: str, args) -> subprocess.Popen:
    """``run_one(spec)`` in a new Python process, its stderr in work/<spec>.log."""
    cmd = [sys.executable, "-m", "bench.course", "--one", spec, "--data", str(args.data)]
    cmd += ["--work", str(args.work), "--out", str(args.work / f"{spec}.json")]
    cmd += ["--steps", str(args.steps)]
    with open(args.work / f"{spec}.log", "w") as log:  # the child keeps its own copy
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def finish(spec: str, proc: subprocess.Popen, args) -> dict:
    """The run's results, or its log's end when it failed."""
    if proc.wait():
        return {"spec": spec, "error": (args.work / f"{spec}.log").read_text()[-2000:]}
    return json.loads((args.work / f"{spec}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="HW4 folder (generated if missing)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (stores, runs)")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--tiers", default=TIERS)
    ap.add_argument("--extras", default=EXTRAS)
    ap.add_argument("--steps", type=int, default=1000, help="timed steps per run")
    ap.add_argument("--peer-steps", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=1, help="runs warming up at once")
    ap.add_argument("--one", default="", help="(internal) run this one spec and exit")
    args = ap.parse_args()
    store_dir = args.work / "store"
    if args.one:
        save(args.out, run_one(args.one, store_dir, args.steps, args.work))
        return
    results = {"info": device_info(), "runs": {}}
    if not (args.data / "metadata.json").exists():
        start = time.perf_counter()
        make_synthetic_hw4(args.data)
        results["generate_s"] = time.perf_counter() - start
    if not store_dir.exists():
        results["ingest"] = ingest(args.data, store_dir, 16)
    specs = [s for s in (args.tiers + "," + args.extras).split(",") if s]
    running = []
    for spec in specs + [None] * args.parallel:
        if spec:
            running.append((spec, start_fresh_process(spec, args)))
        if len(running) == args.parallel or (spec is None and running):
            done, proc = running.pop(0)
            results["runs"][done] = finish(done, proc, args)
            print(done, table_row(results["runs"][done]), flush=True)
            save(args.out, results)
    if args.peer_steps:
        boss = course_config("boss")
        results["peer"] = peer(
            args.data, args.peer_steps, model_cfg=boss.model, segment=boss.recipe.segment
        )
        results["peer"]["model"] = "boss"
        print("peer", results["peer"], flush=True)
    results["course_profile_s"] = sum(
        results["runs"][t].get("projected_course_s", float("nan")) for t in specs if "@" not in t
    )
    print("course profile projected (s)", results["course_profile_s"], flush=True)
    save(args.out, results)


def table_row(run: dict) -> str:
    if "error" in run:
        return "FAILED " + run["error"][-600:]
    keys = ("steps_per_s", "segments_per_s", "warmup_s", "peak_reserved_gib", "projected_course_s")
    keys += ("kernels_per_step", "gpu_busy")
    return " ".join(f"{k}={run[k]:.1f}" for k in keys) + f" graph={run['graph']}"


if __name__ == "__main__":
    main()
