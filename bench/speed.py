"""HW4-scale speed on one GPU (issue: benchmarks in bench/).

Measures, in one run on one device:
  ingest      the `hw4` source (64,666 .pt files) into the packed feature store
  throughput  training segments/s, peak memory and achieved TFLOP/s per tier at segment 128
  validate    full-length validation of the valid split (5,667 utterances)
  e2e         2,240,000 boss training segments from the store to a validated checkpoint
  peer        the course sample recipe: per-file torch.load in a DataLoader (8 workers,
              batch 32, padding -20) training the sample model, on the same files

Usage: python bench/speed.py --data /tmp/hw4 --work /tmp/bench --out reports/bench/speed.json
"""

import argparse
import json
import os
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from spkid.data.hw4 import load_hw4_tensor, make_synthetic_hw4, read_hw4
from spkid.data.split import split_indices
from spkid.data.store import build_store, open_store
from spkid.models import ModelConfig, SpeakerNet
from spkid.runtime import DeviceData, predict_logits
from spkid.train.config import TierConfig, resolve_tier
from spkid.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent
SEGMENT = 128
E2E_SEGMENTS = 2_240_000  # the course sample's 70,000 steps of 32
VALID_RATIO = 0.1  # 5,667 of 56,666
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ingest(data: Path, store_dir: Path, workers: int) -> dict:
    """The hw4 source (training pool and test set) into two stores, as the features stage
    does; seconds for listing, loading and writing."""
    start = time.perf_counter()
    pool, test, speaker2id, _ = read_hw4(data)
    for utts, folder in ((pool, store_dir), (test, store_dir.with_name("test_store"))):
        meta = {"source": {"name": "hw4"}}
        build_store(folder, utts, load_hw4_tensor, speaker2id, meta, workers, "fail", "ingest")
    seconds = time.perf_counter() - start
    return {"files": len(pool) + len(test), "seconds": seconds, "workers": workers}


def tier_config(tier: str, batch: int, steps: int) -> TierConfig:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = resolve_tier(params["tiers"], tier, "course")
    recipe = replace(
        cfg.recipe,
        segment=SEGMENT,
        batch=batch,
        steps=steps,
        warmup=min(cfg.recipe.warmup, steps - 1),
        valid_every=steps,
        checkpoint_every=steps,
        log_every=steps,
    )
    return replace(cfg, recipe=recipe)


def make_trainer(
    cfg,
    store,
    train,
    valid,
    out_dir,
    compile_model,
    seed=0,
    model=None,
    precision="auto",
    graph=True,
    speaker2id=None,
):
    """A Trainer on ``store``'s train/valid utterances on DEVICE, logging nowhere.
    speaker2id: the model's classes (None: the store's mapping, every speaker)."""
    return Trainer(
        cfg,
        DeviceData(store, train, DEVICE, speaker2id),
        DeviceData(store, valid, DEVICE, speaker2id),
        speaker2id or store.speaker2id,
        out_dir,
        lambda m, s: None,
        seed=seed,
        precision=precision,
        compile=compile_model,
        model=model,
        graph=graph,
    )


def throughput(cfg, store, train, valid, out_dir, compile_model, warmup=20, steps=100) -> dict:
    """Segments/s of ``steps`` timed training steps after ``warmup``."""
    torch._dynamo.reset()  # without it, tiers compiled after others in one process ran eagerly
    t = make_trainer(cfg, store, train, valid, out_dir, compile_model)
    c0 = time.perf_counter()
    for _ in range(warmup):
        t.train_step()
    sync()
    warm_s = time.perf_counter() - c0
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        t.train_step()
    sync()
    seconds = time.perf_counter() - start
    flops = FlopCounterMode(display=False)  # counted last: a compiled module that has run
    with flops:  # under FlopCounterMode runs eagerly from then on (measured: 25,444 -> 13,931)
        t.train_step()
    per_step = flops.get_total_flops()
    return {
        "batch": cfg.recipe.batch,
        "compile": compile_model,
        "segments_per_s": steps * cfg.recipe.batch / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else None,
        "tflops": per_step * steps / seconds / 1e12,
        "warmup_s": warm_s,
        "parameters": sum(p.numel() for p in t.model.parameters()),
    }


def validate_speed(cfg, store, train, valid, out_dir, repeats=3) -> dict:
    t = make_trainer(cfg, store, train, valid, out_dir, False)
    predict_logits(t.model, t.valid_data, cfg.recipe.valid_frames, t.precision)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logp = predict_logits(t.model, t.valid_data, cfg.recipe.valid_frames, t.precision)
        logp.argmax(1).cpu()
        times.append(time.perf_counter() - start)
    return {
        "utterances": len(valid),
        "seconds": min(times),
        "frames": int(store.lengths[valid].sum()),
    }


def end_to_end(cfg, store_dir, train, valid, out_dir, compile_model, segments: int) -> dict:
    """Open the store, train ``segments`` segments, validate, write the checkpoint."""
    start = time.perf_counter()
    store = open_store(store_dir)
    steps = segments // cfg.recipe.batch
    cfg = replace(
        cfg,
        recipe=replace(
            cfg.recipe,
            steps=steps,
            warmup=steps // 20,
            valid_every=steps,
            checkpoint_every=steps,
            log_every=max(1, steps // 10),
        ),
    )
    t = make_trainer(cfg, store, train, valid, out_dir, compile_model)
    setup = time.perf_counter() - start
    summary = t.fit()
    sync()
    return {
        "seconds": time.perf_counter() - start,
        "setup_s": setup,  # store opened, frames on the GPU, model built
        "train_s": summary["train_seconds"],  # the steps, compilation included
        "segments": steps * cfg.recipe.batch,
        "steps": steps,
        "batch": cfg.recipe.batch,
        "valid_top1": summary["best_top1"],
        "compile": compile_model,
    }


class CourseDataset(torch.utils.data.Dataset):
    """The course sample's dataset: one torch.load per utterance, random ``segment``-frame crop."""

    def __init__(self, utterances, speaker2id, segment: int = SEGMENT):
        self.items = [(u.path, speaker2id[u.speaker]) for u in utterances]
        self.segment = segment

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        mel = torch.load(path, weights_only=True)
        if len(mel) > self.segment:
            start = np.random.randint(0, len(mel) - self.segment)
            mel = mel[start : start + self.segment]
        return mel, label


def collate(batch):
    mels, labels = zip(*batch)
    return torch.nn.utils.rnn.pad_sequence(mels, batch_first=True, padding_value=-20), torch.tensor(
        labels
    )


SAMPLE_MODEL = ModelConfig(
    encoder="transformer",
    d_model=80,
    layers=1,
    heads=2,
    ffn=256,
    dropout=0.1,
    pooling="mean",
    head="mlp",
)


def peer(
    data: Path, steps: int, warmup: int = 30, model_cfg=SAMPLE_MODEL, segment: int = SEGMENT
) -> dict:
    """The course sample recipe, as the course wrote it, on the same files (fp32, per-file
    loads, batch 32); ``model_cfg`` and ``segment``: another model in that pipeline."""
    pool, _, speaker2id, _ = read_hw4(data)
    loader = torch.utils.data.DataLoader(
        CourseDataset(pool, speaker2id, segment),
        batch_size=32,
        shuffle=True,
        num_workers=8,
        drop_last=True,
        pin_memory=True,
        collate_fn=collate,
        persistent_workers=True,
    )
    model = SpeakerNet(model_cfg, 40, len(speaker2id)).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        try:
            mels, labels = next(it)
        except StopIteration:
            it = iter(loader)
            mels, labels = next(it)
        mels, labels = mels.to(DEVICE, non_blocking=True), labels.to(DEVICE, non_blocking=True)
        lengths = torch.full((len(mels),), mels.shape[1], device=DEVICE)
        loss = torch.nn.functional.cross_entropy(model(mels, lengths, labels), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    rate = steps / (time.perf_counter() - start)
    return {"segments_per_s": rate * 32, "steps_per_s": rate, "batch": 32, "workers": 8}


def device_info() -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "device": torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        # device copies carry stale git metadata: SPKID_COMMIT names the code that ran
        "commit": os.environ.get("SPKID_COMMIT") or commit,
        "host": platform.node(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", type=Path, required=True, help="HW4-layout folder (generated if missing)"
    )
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (store, checkpoints)")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--parts", default="ingest,throughput,validate,e2e,peer")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--e2e-batch", type=int, default=1024)
    ap.add_argument(
        "--compile", default="", help="tiers also measured under torch.compile (boss: e2e too)"
    )
    ap.add_argument("--steps", type=int, default=100, help="timed steps per throughput figure")
    ap.add_argument("--peer-steps", type=int, default=300)
    ap.add_argument("--e2e-segments", type=int, default=E2E_SEGMENTS)
    ap.add_argument(
        "--synthetic", default="600,56666,8000", help="speakers,train,test if generated"
    )
    ap.add_argument("--tiers", default="simple,medium,strong,boss,beyond,tdnn")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    parts = args.parts.split(",")
    results = {"info": device_info()}
    if not (args.data / "metadata.json").exists():
        start = time.perf_counter()
        speakers, n_train, n_test = map(int, args.synthetic.split(","))
        make_synthetic_hw4(args.data, n_speakers=speakers, n_train=n_train, n_test=n_test)
        results["generate_s"] = time.perf_counter() - start
    store_dir = args.work / "store"
    if "ingest" in parts or not store_dir.exists():
        results["ingest"] = ingest(args.data, store_dir, os.cpu_count())
        print("ingest", results["ingest"], flush=True)
        save(args.out, results)
    store = open_store(store_dir)
    train, valid = split_indices(store.speakers, store.sessions, VALID_RATIO, seed=0)
    boss = tier_config("boss", args.batch, 1000)
    if "throughput" in parts:
        results["throughput"] = {}
        for tier in args.tiers.split(","):
            for compile_model in [False] + [True] * (tier in args.compile.split(",")):
                key = f"{tier}{'+compile' if compile_model else ''}"
                cfg = tier_config(tier, args.batch, 1000)
                results["throughput"][key] = throughput(
                    cfg, store, train, valid, args.work / tier, compile_model, steps=args.steps
                )
                print(key, results["throughput"][key], flush=True)
                save(args.out, results)
    if "validate" in parts:
        results["validate"] = validate_speed(boss, store, train, valid, args.work / "v")
        print("validate", results["validate"], flush=True)
        save(args.out, results)
    if "e2e" in parts:
        results["e2e"] = end_to_end(
            tier_config("boss", args.e2e_batch, 1000),
            store_dir,
            train,
            valid,
            args.work / "e2e",
            "boss" in args.compile.split(","),
            args.e2e_segments,
        )
        print("e2e", results["e2e"], flush=True)
        save(args.out, results)
    if "peer" in parts:
        results["peer"] = peer(args.data, args.peer_steps)
        print("peer", results["peer"], flush=True)
        save(args.out, results)
    save(args.out, results)


def save(path: Path, results: dict) -> None:
    """Write the results so far (each part saves, so a crash keeps what was measured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
