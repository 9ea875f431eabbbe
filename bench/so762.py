"""Accuracy on real speech: the so762 protocol (../shared/data/README.md), every tier beside
the classical anchor and SpeechBrain's ECAPA-TDNN, on the same features.

Per speaker the first 8 utterances (by name) are the training pool (the project's split
carves one out for validation), the other 12 are test. Each model is scored on the test
utterances at full length and on their centred 200-frame windows.

Usage (one model per process, so several share a GPU; then merge):
    python bench/so762.py --store /tmp/so762_store --model boss --out parts/boss.json
    python bench/so762.py --store /tmp/so762_store --model boss --set recipe.lr=5e-4 --out parts/boss_lr.json
    python bench/so762.py --ensemble parts/boss.npz parts/medium.npz --out parts/boss+medium.json
    python bench/so762.py --merge parts/*.json --out reports/bench/so762.json   # adds or replaces rows
Models: anchor, ecapa, and the tiers of params.yaml (course profile; --set KEY=VALUE overrides
one of its model or recipe fields, YAML-typed). Every model trains on crops of batch 128: boss
and the ECAPA peer for 4,000 steps (SO762_STEPS), each tier for as many times that as its
course recipe has boss's training segments (batch x steps; beyond: three times).
Each trained model also writes its test log-probabilities beside --out (.npz); --ensemble
scores the mean of several.
"""

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bench.speed import DEVICE, ROOT, device_info, make_trainer, tier_config
from spkid import checkpoint
from spkid.atomic import write_json
from spkid.config import build, merge
from spkid.data.split import split_indices
from spkid.data.store import open_store
from spkid.models.heads import MarginHead
from spkid.runtime import DeviceData, predict_logits
from spkid.train.config import TierConfig, resolve_tier

POOL_PER_SPEAKER = 8
WINDOW = 200
STEPS = int(os.environ.get("SO762_STEPS", "4000"))  # the boss tier's; others scale (budget)
BATCH = 128
TEST_CROPS = 10  # test-time crops of the training segment, scored beside full length
VALID_RATIO = 1 / POOL_PER_SPEAKER


def load_tiers() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["tiers"]


def protocol(store, whole_pool: bool = False) -> tuple:
    """(train, valid, test) indices: first 8 per speaker by name form the pool. whole_pool:
    train on all of it, the valid utterances too (valid top-1 is then not held out)."""
    by_speaker = {}
    for i in np.argsort(store.uids, kind="stable"):
        by_speaker.setdefault(store.speakers[i], []).append(int(i))
    pool = np.array(sorted(i for v in by_speaker.values() for i in v[:POOL_PER_SPEAKER]))
    test = np.array(sorted(i for v in by_speaker.values() for i in v[POOL_PER_SPEAKER:]))
    tr, va = split_indices(
        [store.speakers[i] for i in pool], [store.sessions[i] for i in pool], VALID_RATIO, seed=0
    )
    return np.concatenate([pool[tr], pool[va]] if whole_pool else [pool[tr]]), pool[va], test


def centred(data: DeviceData, frames: int) -> DeviceData:
    """The same utterances cut to their centred ``frames``-frame windows."""
    out = copy.copy(data)
    out.offsets = data.offsets + (data.lengths - frames).clamp(min=0) // 2
    out.lengths = data.lengths.clamp(max=frames)
    return out


def anchor(store, pool, test) -> dict:
    """Per-utterance log-mel mean, std and delta std; standardised; logistic regression."""

    def stats(indices, window):
        rows = []
        for i in indices:
            x = np.asarray(store.features(i), dtype=np.float32)
            if window:
                start = max(0, (len(x) - window) // 2)
                x = x[start : start + window]
            rows.append(np.concatenate([x.mean(0), x.std(0), np.diff(x, axis=0).std(0)]))
        return np.array(rows)

    scaler = StandardScaler().fit(stats(pool, 0))
    clf = LogisticRegression(C=1.0).fit(scaler.transform(stats(pool, 0)), store.labels[pool])
    return {
        w: float((clf.predict(scaler.transform(stats(test, n))) == store.labels[test]).mean())
        for w, n in (("full", 0), ("window", WINDOW))
    }


class Ecapa(torch.nn.Module):
    """SpeechBrain's ECAPA-TDNN (C 512, 1536, embedding 192) with an AAM head (s 30, m 0.2)."""

    def __init__(self, n_mels: int, n_classes: int):
        super().__init__()
        import torchaudio

        if not hasattr(torchaudio, "list_audio_backends"):  # speechbrain 1.0 asks at import;
            torchaudio.list_audio_backends = list  # torchaudio 2.9+ dropped it
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.encoder = ECAPA_TDNN(n_mels, channels=[512, 512, 512, 512, 1536], lin_neurons=192)
        self.head = MarginHead(192, n_classes, scale=30.0, margin=0.2, kind="angular")

    def embed(self, feats, lengths):
        """feats (B, T, n_mels), lengths (B,) -> (B, 192) embeddings (the head's input)."""
        return self.encoder(feats, lengths.float() / feats.shape[1])[:, 0]

    def forward(self, feats, lengths, labels=None):
        return self.head(self.embed(feats, lengths), labels)


def overrides(pairs: list) -> dict:
    """["recipe.lr=5e-4", ...] -> {"recipe": {"lr": 0.0005}} ."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = _value(value)
    return out


def _value(text: str):
    """A number where the text is one (YAML 1.1 reads 5e-4 as a string), else YAML."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def budget(tier: str) -> float:
    """The tier's training segments (batch x steps, course profile) over the boss tier's."""
    tiers = load_tiers()
    own, boss = (resolve_tier(tiers, t, "course").recipe for t in (tier, "boss"))
    return (own.batch * own.steps) / (boss.batch * boss.steps)


def bench_config(name: str, override: dict) -> TierConfig:
    """The tier's course model and recipe at this benchmark's budget, then ``override``: batch
    BATCH and STEPS steps times the tier's budget; warmup and validation as for STEPS."""
    tier = "boss" if name == "ecapa" else name
    cfg = tier_config(tier, BATCH, round(STEPS * budget(tier)))
    recipe = replace(
        cfg.recipe,
        segment=resolve_tier(load_tiers(), tier, "course").recipe.segment,  # ECAPA: boss's crops
        warmup=STEPS // 10,
        valid_every=STEPS // 8,
        log_every=STEPS // 8,
        checkpoint_every=STEPS,
    )
    data = asdict(replace(cfg, recipe=recipe))
    return build(TierConfig, merge(data, override), f"{name} --set")


def train_model(
    name: str, override: dict, seed: int, store, train, valid, work: Path, speaker2id=None
) -> tuple:
    """Train ``name`` (bench_config) on the ``train`` utterances, validating on ``valid``, and
    load its best checkpoint. speaker2id: the model's classes (None: every store speaker).
    Returns (trainer, config, fit's summary)."""
    cfg = bench_config(name, override)
    classes = len(speaker2id or store.speaker2id)
    model = Ecapa(store.n_mels, classes) if name == "ecapa" else None
    t = make_trainer(
        cfg, store, train, valid, work, False, seed=seed, model=model, speaker2id=speaker2id
    )
    summary = t.fit()
    t.model.load_state_dict(checkpoint.load(work / checkpoint.BEST, DEVICE)["model"])
    return t, cfg, summary


def train_and_score(
    name: str, override: dict, seed: int, store, train, valid, test, work: Path
) -> tuple:
    """Train ``name`` and score the test set, whole and in test-time crops of the training
    segment. Returns (result, {"full", "window", "full_crops", "window_crops"} log-probs)."""
    test_data = DeviceData(store, test, DEVICE)
    start = time.perf_counter()
    t, cfg, summary = train_model(name, override, seed, store, train, valid, work)
    logps = {}
    for key, d in (("full", test_data), ("window", centred(test_data, WINDOW))):
        for suffix, crops in (("", 0), ("_crops", TEST_CROPS)):
            logp = predict_logits(
                t.model, d, cfg.recipe.valid_frames, t.precision, crops, cfg.recipe.segment
            )
            logps[key + suffix] = logp.cpu().numpy()
    result = {
        **top1(logps, store.labels[test]),
        "valid_top1": summary["best_top1"],
        "train_s": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in t.model.parameters()),
        "segment": cfg.recipe.segment,
        "steps": cfg.recipe.steps,
        "set": override,
    }
    return result, logps


def top1(logps: dict, labels: np.ndarray) -> dict:
    """{key: top-1} of {key: (U, C) log-probabilities}."""
    return {key: float((logp.argmax(1) == labels).mean()) for key, logp in logps.items()}


def ensemble(paths: list) -> dict:
    """Top-1 of the mean log-probabilities of several models' .npz files."""
    parts = [np.load(p) for p in paths]
    keys = set.intersection(*(set(p.files) - {"labels"} for p in parts))
    mean = {key: np.mean([p[key] for p in parts], axis=0) for key in sorted(keys)}
    return {**top1(mean, parts[0]["labels"]), "members": [Path(p).stem for p in paths]}


def merge_parts(parts: list, out: Path) -> None:
    """Add (or replace) each part JSON to ``out`` as a row named by its file's stem."""
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged.update({Path(p).stem: json.loads(Path(p).read_text()) for p in parts})
    write_json(out, merged)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store")
    ap.add_argument("--model")
    ap.add_argument("--work", type=Path, default=Path("/tmp/so762_work"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--merge", nargs="*")
    ap.add_argument("--ensemble", nargs="*")
    ap.add_argument("--whole-pool", action="store_true", help="train on valid's utterances too")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.merge:
        merge_parts(args.merge, args.out)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.ensemble:
        result = ensemble(args.ensemble)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print("ensemble", json.dumps(result), flush=True)
        return
    store = open_store(args.store)
    train, valid, test = protocol(store, args.whole_pool)
    if args.model == "anchor":
        result = anchor(store, protocol(store, whole_pool=True)[0], test)  # the whole pool
    else:
        result, logps = train_and_score(
            args.model,
            overrides(args.set),
            args.seed,
            store,
            train,
            valid,
            test,
            args.work / args.out.stem,
        )
        result.update(seed=args.seed, whole_pool=args.whole_pool)
        np.savez(args.out.with_suffix(".npz"), labels=store.labels[test], **logps)
    result.update(
        device=torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu",
        date=time.strftime("%Y-%m-%d"),
        commit=device_info()["commit"],
        counts={"train": len(train), "valid": len(valid), "test": len(test)},
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(args.model, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
