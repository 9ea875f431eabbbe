#!/usr/bin/env bash
# One GPU's sweep of open-set training variants on so762 (bench/openset.py, issue 24.6-8):
# every variant below trains in its own process, all side by side on one GPU; each part is
# rescored with --centre from its saved embeddings (no training), every beyond x tdnn pair is
# scored as an ensemble (--embeddings, plain and --centre), and all parts merge into one JSON.
# Every part holds cosine and AS-norm, full length and 2 s (openset.py).
#
#   bench/openset_sweep.sh [STORE]       # STORE: /tmp/so762_store (bench/so762_features.py --no-trim)
#   bench/openset_sweep.sh --list        # the variants, one a line: name model --set KEY=VALUE ...
#
# On the GPU machine (the device copy's .git is stale, so name the commit):
#   SPKID_COMMIT=<commit> bench/openset_sweep.sh /tmp/so762_store
# Smoke run on CPU (a tiny store, a few steps, small batches):
#   SO762_STEPS=8 SWEEP_SET="recipe.batch=8" OUT=/tmp/sweep_smoke bench/openset_sweep.sh /tmp/so762_tiny
#
# Writes under $OUT/openset/ (at most 8 files come back from the device: see bench/README.md):
#   openset_sweep.json   every part merged (rows named by part: <variant>, <variant>_centre,
#                        ens_<beyond variant>+<tdnn variant>[_centre])
#   parts.tar.gz         each part's JSON and every process's log
#   <variant>.npz        each trained variant's embeddings of every store utterance, to rescore
#                        or ensemble later with openset.py --embeddings
# Scratch (checkpoints, parts) in $SWEEP_WORK (default /tmp/openset_sweep; emptied first).
#
# Time guard: the whole script ends within SWEEP_DEADLINE seconds (default 540). Training
# processes are killed (timeout) SWEEP_RESERVE seconds (default 75) before it, so rescoring,
# ensembles and the merge still run; a killed variant leaves its log and no part. Steps scale
# with SO762_STEPS (default 4000, boss's and the peer's budget, as in so762.py).
# Environment: PYTHON (default python), SWEEP_SET (space-separated KEY=VALUE added to every
# variant, after its own), SWEEP_THREADS (CPU threads a process, default 2), SWEEP_ONLY (an
# extended regular expression: only the variants whose whole name it matches).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${SO762_STEPS:-4000}

variants() {
  # name model KEY=VALUE...; steps relative to S (openset.py's warmup and validation follow S)
  local q=$((S * 3 / 4))
  cat <<EOF
tdnn_s200 tdnn recipe.segment=200 recipe.steps=$q
tdnn_s200_m03 tdnn recipe.segment=200 recipe.steps=$q model.margin=0.3
tdnn_4k tdnn recipe.steps=$S
beyond_e192_s200_m03 beyond model.embedding=192 recipe.segment=200 recipe.steps=$q model.margin=0.3
beyond_e192_m03 beyond model.embedding=192 recipe.steps=$S model.margin=0.3
EOF
}

chosen() { grep -E "^(${SWEEP_ONLY:-.*}) "; }   # the variants SWEEP_ONLY names (default all)

if [ "${1:-}" = "--list" ]; then
  variants | chosen | while read -r name model sets; do
    printf '%s %s' "$name" "$model"
    for kv in $sets ${SWEEP_SET:-}; do printf ' --set %s' "$kv"; done
    echo
  done
  exit 0
fi

STORE=${1:-/tmp/so762_store}
OUT_DIR=${OUT:-/tmp/openset_out}/openset
WORK=${SWEEP_WORK:-/tmp/openset_sweep}
DEADLINE=${SWEEP_DEADLINE:-540}
RESERVE=${SWEEP_RESERVE:-75}
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${SWEEP_THREADS:-2} MKL_NUM_THREADS=${SWEEP_THREADS:-2}
[ -n "${SPKID_COMMIT:-}" ] || echo "warning: SPKID_COMMIT unset; parts record git's HEAD" >&2
[ -d "$STORE" ] || { echo "no store at $STORE" >&2; exit 2; }
cd "$ROOT" || exit 2
rm -rf "${WORK:?}/parts" "${WORK:?}/logs" "${WORK:?}/ckpt"
mkdir -p "$WORK/parts" "$WORK/logs" "$WORK/ckpt" "$OUT_DIR"
P=$WORK/parts
L=$WORK/logs

left() { echo $((DEADLINE - $1 - SECONDS)); }   # seconds left before the deadline less $1

rescore() { # out-stem npz... : --embeddings rescoring, centred when the stem ends in _centre
  local stem=$1 t
  shift
  t=$(left 25)
  [ "$t" -gt 5 ] || { echo "$stem: no time left to score" >>"$L/skipped.log"; return; }
  local centre=()
  [[ $stem == *_centre ]] && centre=(--centre)
  timeout -k 5 "$t" "$PY" bench/openset.py --store "$STORE" --embeddings "$@" "${centre[@]}" \
    --out "$P/$stem.json" >"$L/$stem.log" 2>&1
}

finish() {
  trap - EXIT
  local parts=("$P"/*.json)
  if [ -e "${parts[0]}" ]; then
    rm -f "$OUT_DIR/openset_sweep.json"
    "$PY" bench/openset.py --merge "${parts[@]}" --out "$OUT_DIR/openset_sweep.json" \
      >"$L/merge.log" 2>&1 || echo "merge failed: $L/merge.log" >&2
  fi
  tar czf "$OUT_DIR/parts.tar.gz" --exclude='*.npz' -C "$WORK" parts logs 2>/dev/null
  cp "$P"/*.npz "$OUT_DIR"/ 2>/dev/null
  if [ -f "$OUT_DIR/openset_sweep.json" ]; then
    "$PY" - "$OUT_DIR/openset_sweep.json" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
print(f"{'part':40s} {'scoring':7s} top1  EER%  DIR1% DIR5% closed train_s")
for name, r in sorted(rows.items()):
    for s in ("cosine", "asnorm"):
        f = r["full"][s]
        trained = ""  # the closed-set top-1 and training seconds of a trained part
        if "train_s" in r:
            trained = f"{r['closed_top1']['full']:.3f}  {r['train_s']:.0f}"
        print(f"{name:40s} {s:7s} {f['top1']:.3f} {100 * f['eer']:5.2f} {f['dir_fa01']:.2f}  "
              f"{f['dir_fa05']:.2f}  {trained}")
EOF
  fi
  echo "sweep done in ${SECONDS} s; parts: $(ls "$P"/*.json 2>/dev/null | wc -l); out: $OUT_DIR"
  cat "$L/skipped.log" 2>/dev/null
}
trap finish EXIT

# 1. every variant in its own process, side by side; each rescored centred once trained
train_t=$(left "$RESERVE")
while read -r name model sets; do
  args=()
  for kv in $sets ${SWEEP_SET:-}; do args+=(--set "$kv"); done
  (
    timeout -k 10 "$train_t" "$PY" bench/openset.py --store "$STORE" --model "$model" \
      "${args[@]}" --work "$WORK/ckpt" --out "$P/$name.json" >"$L/$name.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || echo "$name: training exited $rc at ${SECONDS} s (124/137: time guard)" \
      >>"$L/skipped.log"
    [ -f "$P/$name.npz" ] && rescore "${name}_centre" "$P/$name.npz"
    echo "$name: done at ${SECONDS} s (rc $rc)"
  ) &
done < <(variants | chosen)
wait

# 2. ensembles: every beyond variant with every tdnn variant, plain and centred
for b in "$P"/beyond*.npz; do
  for t in "$P"/tdnn*.npz; do
    [ -f "$b" ] && [ -f "$t" ] || continue
    stem="ens_$(basename "$b" .npz)+$(basename "$t" .npz)"
    rescore "$stem" "$b" "$t" &
    rescore "${stem}_centre" "$b" "$t" &
  done
done
wait
