"""Where a training step's GPU time goes: torch.profiler's kernel table for one tier.

Usage: python bench/profile_step.py --store /tmp/bench/store --tier boss --batch 1024
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.speed import DEVICE, make_trainer, tier_config
from spkid.data.split import split_indices
from spkid.data.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", required=True)
    ap.add_argument("--tier", default="boss")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    store = open_store(args.store)
    train, valid = split_indices(store.speakers, store.sessions, 0.1, seed=0)
    t = make_trainer(
        tier_config(args.tier, args.batch, 1000), store, train, valid, "/tmp/profile", args.compile
    )
    for _ in range(15):
        t.train_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            t.train_step()
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(
            sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=70
        )
    )
    print("device", DEVICE, torch.cuda.get_device_name(0))


if __name__ == "__main__":
    main()
