"""Data-parallel scaling on one host: run under torchrun with 1 and then N GPUs.

Each rank holds the store on its GPU and draws its own crops; the global batch stays
``--batch`` (per-rank batch = batch / world), so runs at different world sizes train
the same recipe. Measures training segments/s (global), then trains ``--steps`` steps
and reports valid top-1 (rank 0 writes the JSON).

Usage: torchrun --standalone --nproc-per-node 2 bench/ddp.py --store data/features/train \
           --split data/split.json --out reports/bench/ddp_2.json
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.speed import tier_config
from spkid.data.store import open_store
from spkid.runtime import DeviceData
from spkid.train import distributed
from spkid.train.loop import Trainer


def trainer(cfg, store, split, rank, out_dir) -> Trainer:
    dev = torch.device(f"cuda:{rank.local}")
    return Trainer(
        cfg,
        DeviceData(store, split["train"], dev),
        DeviceData(store, split["valid"], dev),
        store.speaker2id,
        out_dir,
        lambda m, s: None,
        seed=0,
        precision="bf16",
        rank=rank.rank,
        world=rank.world,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tier", default="boss")
    ap.add_argument("--batch", type=int, default=1024, help="global batch")
    ap.add_argument("--timed", type=int, default=100)
    ap.add_argument(
        "--steps", type=int, default=1500, help="training steps for the accuracy figure"
    )
    args = ap.parse_args()
    rank = distributed.init("cuda")
    store = open_store(args.store)
    split = json.loads(Path(args.split).read_text())
    cfg = tier_config(args.tier, args.batch // rank.world, args.steps)
    t = trainer(cfg, store, split, rank, "/tmp/ddp")
    for _ in range(20):
        t.train_step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.timed):
        t.train_step()
    torch.cuda.synchronize()
    rate = args.timed * args.batch / (time.perf_counter() - start)
    cfg = replace(
        cfg,
        recipe=replace(
            cfg.recipe, warmup=args.steps // 10, valid_every=args.steps // 5, log_every=100
        ),
    )
    start = time.perf_counter()
    summary = trainer(cfg, store, split, rank, "/tmp/ddp").fit()
    if rank.rank == 0:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "world": rank.world,
            "device": torch.cuda.get_device_name(0),
            "global_batch": args.batch,
            "segments_per_s": rate,
            "steps": args.steps,
            "train_s": time.perf_counter() - start,
            "valid_top1": summary["best_top1"],
            "ranks": summary["ranks"],
            "date": time.strftime("%Y-%m-%d"),
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
