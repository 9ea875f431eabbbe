"""Open set on real speech (issue 24.6): so762's speakers sorted by name, the first half
trained as in so762.py, the second half never seen in training; each model's embeddings
(the head's input, L2-normalised) identify, reject and verify the unseen speakers.

Protocol (``protocol``; 125 speakers: 62 trained, 63 held out):
- training: the trained speakers' first 8 utterances (so762.protocol carves one a speaker
  out for validation); the model's classes are the trained speakers only;
- enrolment: each held-out speaker's first 8 utterances, their normalised embeddings'
  mean (evaluate/bank.py); genuine probes: its other 12, identified among the held-out
  speakers (top-1 on unseen speakers);
- impostor probes: the trained speakers' other 12 utterances; the threshold on a probe's
  best score is set for 1 % and 5 % of them accepted, and DIR is the share of genuine
  probes accepted and named right (evaluate/openset.py);
- verification: seeded trials (TRIAL_SEED, the same for every model) among all the held-out
  speakers' utterances, capped by params.yaml's verify block; EER and minDCF at p 0.01
  and 0.05 (evaluate/verification.py);
- every score plain cosine and AS-norm, its cohort the trained speakers' mean embeddings
  over their 8 pool utterances (top-N: verify.cohort_top); --centre subtracts the mean
  of those pool utterances' embeddings from every embedding first;
- "full": every utterance at full length; "window": every utterance (enrolment, probes,
  trials and cohort) cut to its centred 200-frame (2 s) window.

Usage (one model per process, several share a GPU; each writes its JSON when done):
    python bench/openset.py --store /tmp/so762_store --model boss --out parts/boss.json
    python bench/openset.py --store /tmp/so762_store --model boss --set model.margin=0.3 --out parts/boss_m3.json
    python bench/openset.py --store /tmp/so762_store --embeddings parts/beyond.npz parts/tdnn.npz --out parts/beyond+tdnn.json
    python bench/openset.py --merge parts/*.json --out reports/bench/openset.json
Models and steps as in so762.py (SO762_STEPS, --set KEY=VALUE). Each trained model writes its
embeddings of every store utterance beside --out (.npz); --embeddings rescores saved ones
(with --centre, say) without training, and scores an ensemble of several: the concatenation
of the members' unit-length (with --centre: centred, each member on its own) embeddings, so
a trial's cosine is the mean of the members' cosines.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from bench import so762
from bench.speed import DEVICE, ROOT, device_info
from spkid.atomic import atomic_path, write_json
from spkid.config import build
from spkid.data.split import trained_mapping
from spkid.data.store import open_store
from spkid.evaluate.bank import empty_bank, enroll, model_digest, normalise, score, speaker_means
from spkid.evaluate.embed import embed_utterances
from spkid.evaluate.openset import FALSE_ALARMS, detection_identification_rate, threshold_at
from spkid.evaluate.verification import (
    VerifyConfig,
    asnorm,
    cosine_scores,
    make_trials,
    verification_metrics,
)
from spkid.runtime import DeviceData, predict_logits

TRIAL_SEED = 0  # the verification trials' draw, the same for every model and seed
WINDOWS = {"full": 0, "window": so762.WINDOW}  # frames (0: the whole utterance)
SCORINGS = ("cosine", "asnorm")


def protocol(store) -> dict:
    """The open-set split of a so762 store.

    Returns:
        {"trained", "heldout": speaker names, sorted; "train", "valid": the trained speakers'
        so762 training and validation utterances; "cohort": their 8 pool utterances;
        "impostor": their other 12; "enrol": the held-out speakers' first 8; "genuine": their
        other 12} (index arrays into the store, sorted).
    """
    train, valid, test = so762.protocol(store)
    names = sorted(set(store.speakers))
    trained = names[: len(names) // 2]
    is_trained = np.isin(np.asarray(store.speakers), trained)
    pool = np.sort(np.concatenate([train, valid]))

    def side(indices, keep):
        return indices[is_trained[indices] == keep]

    return {
        "trained": trained,
        "heldout": names[len(trained) :],
        "train": side(train, True),
        "valid": side(valid, True),
        "cohort": side(pool, True),
        "impostor": side(test, True),
        "enrol": side(pool, False),
        "genuine": side(test, False),
    }


def verify_config() -> VerifyConfig:
    """params.yaml's verify block (trial caps, AS-norm's top-N)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return build(VerifyConfig, params["verify"], "verify")


def bank_scores(bank, probes: np.ndarray, model: str, cohort, top: int) -> np.ndarray:
    """(N, E) probes against the bank's S speakers: (N, S) cosine, or AS-norm'd against the
    (K, E) ``cohort`` (None: plain cosine)."""
    raw = score(bank, probes, model)
    if cohort is None:
        return raw
    n, s = raw.shape
    sides = np.concatenate([normalise(probes), normalise(bank.means)])  # (N + S, E)
    pairs = np.stack(np.meshgrid(np.arange(n), n + np.arange(s), indexing="ij"), -1)
    return asnorm(raw.ravel(), sides, pairs.reshape(-1, 2), cohort, top).reshape(n, s)


def identification(emb, speakers, part: dict, model: str, cohort, top: int) -> dict:
    """Top-1 of the genuine probes among the enrolled held-out speakers, and DIR with the
    threshold at each of FALSE_ALARMS on the impostor probes' best scores."""
    bank = empty_bank(model, emb.shape[1])
    for name in part["heldout"]:
        bank = enroll(bank, name, emb[part["enrol"][speakers[part["enrol"]] == name]], model)
    genuine = bank_scores(bank, emb[part["genuine"]], model, cohort, top)  # (G, S)
    impostor = bank_scores(bank, emb[part["impostor"]], model, cohort, top).max(1)  # (I,)
    correct = np.array(bank.names)[genuine.argmax(1)] == speakers[part["genuine"]]
    out = {"top1": float(correct.mean())}
    for rate in FALSE_ALARMS:
        key = f"fa{round(rate * 100):02d}"
        out[f"threshold_{key}"] = threshold_at(impostor, rate)
        out[f"dir_{key}"] = detection_identification_rate(
            genuine.max(1), correct, out[f"threshold_{key}"]
        )
    return out


def fuse(members: list, cohort: np.ndarray, centring: bool) -> np.ndarray:
    """One model's (U, E) embeddings, or several models' side by side: each member's rows
    L2-normalised (and, centring, less their mean over the ``cohort`` utterances and
    normalised again), concatenated and normalised, so a pair's cosine is the mean of the
    members' cosines. Returns (U, sum of E) float32."""
    rows = [normalise(m) for m in members]
    if centring:
        rows = [normalise(r - r[cohort].mean(0)) for r in rows]  # mean subtraction
    return normalise(np.concatenate(rows, 1))


def score_window(members: list, speakers, part: dict, model: str, config, centring: bool):
    """Every metric of one window's embeddings (a list of (U, E) store-order arrays, one per
    member; fuse), per scoring.

    Returns:
        ({"cosine", "asnorm": {top1, threshold_fa01, dir_fa01, ..., eer, mindcf_p01, ...}},
        the trial counts).
    """
    speakers = np.asarray(speakers)
    emb = fuse(members, part["cohort"], centring)
    names, means, _counts = speaker_means(emb[part["cohort"]], speakers[part["cohort"]])
    cohort = normalise(means)
    held = np.sort(np.concatenate([part["enrol"], part["genuine"]]))
    trials, is_target = make_trials(
        speakers[held], config.target_trials, config.nontarget_trials, TRIAL_SEED
    )
    raw = cosine_scores(emb[held], trials)
    scores = {"cosine": raw, "asnorm": asnorm(raw, emb[held], trials, cohort, config.cohort_top)}
    out = {}
    for name in SCORINGS:
        own_cohort = cohort if name == "asnorm" else None
        out[name] = {
            **identification(emb, speakers, part, model, own_cohort, config.cohort_top),
            **verification_metrics(scores[name], is_target),
        }
    counts = {
        "target_trials": int(is_target.sum()),
        "nontarget_trials": int((~is_target).sum()),
        "trial_utterances": len(held),
        "cohort_speakers": len(names),
        "cohort_top": min(config.cohort_top, len(names)),
    }
    return out, counts


def score_embeddings(embeddings: dict, store, model: str, centring: bool) -> dict:
    """Every metric at every window of {window: [(U, E) store-order embeddings per member]},
    with the protocol's and the trials' counts."""
    part, config = protocol(store), verify_config()
    result = {}
    for window in WINDOWS:
        result[window], trials = score_window(
            embeddings[window], store.speakers, part, model, config, centring
        )
    counts = {k: len(v) for k, v in part.items()}
    return {**result, "counts": {**counts, **trials}, "centre": centring}


def embed_store(model, store, max_frames: int, precision: str) -> dict:
    """{window: (U, E) float32 unit-length embeddings of every store utterance, store order}."""
    data = DeviceData(store, np.arange(len(store.uids)), DEVICE)
    return {
        window: embed_utterances(
            model, so762.centred(data, frames) if frames else data, max_frames, precision
        )
        .cpu()
        .numpy()
        for window, frames in WINDOWS.items()
    }


def closed_top1(trainer, store, indices, speaker2id, cfg) -> dict:
    """{window: top-1} of the trained classifier on trained speakers' utterances."""
    data = DeviceData(store, indices, DEVICE, speaker2id)
    out = {}
    for window, frames in WINDOWS.items():
        d = so762.centred(data, frames) if frames else data
        logp = predict_logits(trainer.model, d, cfg.recipe.valid_frames, trainer.precision)
        out[window] = float((logp.argmax(1) == d.labels).float().mean())
    return out


def train_and_embed(name: str, override: dict, seed: int, store, work: Path) -> tuple:
    """Train ``name`` on the trained speakers (so762.train_model) and embed every store
    utterance. Returns (result without the open-set metrics, embeddings, model digest)."""
    part = protocol(store)
    speaker2id = trained_mapping(store.speaker2id, part["trained"])
    start = time.perf_counter()
    t, cfg, summary = so762.train_model(
        name, override, seed, store, part["train"], part["valid"], work, speaker2id
    )
    train_s = time.perf_counter() - start
    print(f"{name}: trained in {train_s:.0f} s, valid top-1 {summary['best_top1']:.3f}", flush=True)
    start = time.perf_counter()
    embeddings = embed_store(t.model, store, cfg.recipe.valid_frames, t.precision)
    print(
        f"{name}: embedded {len(store.uids)} utterances in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    result = {
        "closed_top1": closed_top1(t, store, part["impostor"], speaker2id, cfg),
        "valid_top1": summary["best_top1"],
        "train_s": train_s,
        "parameters": sum(p.numel() for p in t.model.parameters()),
        "dim": int(embeddings["full"].shape[1]),
        "segment": cfg.recipe.segment,
        "steps": cfg.recipe.steps,
        "set": override,
        "seed": seed,
    }
    return result, embeddings, model_digest(t.model)


def save_embeddings(path: Path, embeddings: dict, store, model: str) -> None:
    """Write a model's embeddings of every store utterance (.npz, with uids and digest)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, uids=np.array(store.uids), model=np.array(model), **embeddings)


def load_embeddings(paths: list, store) -> tuple:
    """Saved embeddings of one or several models (an ensemble: fuse).
    Returns ({window: [(U, E) per member]}, model identity)."""
    parts = [np.load(p, allow_pickle=False) for p in paths]
    for path, part in zip(paths, parts):
        if list(part["uids"]) != list(store.uids):
            raise ValueError(f"{path}: its utterances are not the store's ({len(part['uids'])})")
    embeddings = {w: [p[w] for p in parts] for w in WINDOWS}
    return embeddings, "+".join(str(p["model"]) for p in parts)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store")
    ap.add_argument("--model", help="a tier of params.yaml or ecapa (SpeechBrain's)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/openset_work"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--centre", action="store_true", help="subtract the cohort's mean embedding")
    ap.add_argument("--embeddings", nargs="+", type=Path, help="score saved .npz (no training)")
    ap.add_argument("--merge", nargs="*")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.merge:
        so762.merge_parts(args.merge, args.out)
        return
    if not args.store or not (args.model or args.embeddings):
        ap.error("--store and one of --model, --embeddings (or --merge alone)")
    store = open_store(args.store)
    if args.embeddings:
        embeddings, model = load_embeddings(args.embeddings, store)
        result = {"members": [p.stem for p in args.embeddings]}
    else:
        result, embeddings, model = train_and_embed(
            args.model, so762.overrides(args.set), args.seed, store, args.work / args.out.stem
        )
        save_embeddings(args.out.with_suffix(".npz"), embeddings, store, model)
        embeddings = {w: [e] for w, e in embeddings.items()}
    result.update(score_embeddings(embeddings, store, model, args.centre))
    result.update(model=args.model, **device_info())
    write_json(args.out, result)
    print(args.model or "+".join(result["members"]), json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
