"""Where a demo-profile training step's CPU time goes: seconds per step for every tier, and
torch.profiler's operator table (self CPU time) for each.

Usage: python bench/profile_cpu.py [--tiers boss tdnn] [--steps 5] [--threads 2]
        [--out reports/bench/profile_cpu.txt]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from tests.conftest import make_store  # random features: a step's cost does not depend on them
from torch.profiler import ProfilerActivity, profile

from bench.speed import ROOT, make_trainer
from spkid.data.split import split_indices
from spkid.data.store import open_store
from spkid.train.config import resolve_tier

WARMUP = 2


def profile_tier(tier: str, store, steps: int, rows: int, work: Path) -> tuple:
    """(wall seconds per step, CPU seconds per step, the profiler's table) of ``steps``
    demo-profile steps of ``tier``. On a shared machine the wall time inflates; the process's
    CPU time (all its threads) much less."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = resolve_tier(params["tiers"], tier, "demo")
    train, valid = split_indices(store.speakers, store.sessions, 0.25, seed=0)
    t = make_trainer(cfg, store, train, valid, work / tier, compile_model=False)
    for _ in range(WARMUP):
        t.train_step()
    c0, p0 = time.perf_counter(), time.process_time()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t.train_step()
    per_step = (time.perf_counter() - c0) / steps
    cpu_per_step = (time.process_time() - p0) / steps
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=50
    )
    return per_step, cpu_per_step, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiers", nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tiers = args.tiers or list(yaml.safe_load((ROOT / "params.yaml").read_text())["tiers"])
    report = []
    with tempfile.TemporaryDirectory() as work:
        store = open_store(make_store(Path(work) / "store", n_speakers=8, per_speaker=8))
        for tier in tiers:
            wall, cpu, table = profile_tier(tier, store, args.steps, args.rows, Path(work))
            line = f"{tier}: {wall * 1000:.0f} ms/step wall, {cpu * 1000:.0f} ms CPU ({args.threads} threads)"
            print(line, flush=True)
            report += [line, table]
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
