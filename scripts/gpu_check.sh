#!/usr/bin/env bash
# GPU check: run the CUDA path of the suites over the default models, write results/<...>/<run>.json, one report.
#
# One prepared command, meant to finish in under 8 minutes on one H100 when torch is already installed:
#   scripts/gpu_check.sh                      # one GPU, default models, the CUDA-path suites
#   scripts/gpu_check.sh --gpus 4             # 4 processes in parallel, one per GPU (CUDA_VISIBLE_DEVICES),
#                                             # each running shard k/4 of the models (--nm-shard)
#   scripts/gpu_check.sh --gpus all --shard 2/3 --suites all --no-report   # CI: runner 2 of 3, every GPU
#   scripts/gpu_check.sh --dtype bfloat16 --models gpt2,bert-base-uncased --budget 300
#   scripts/gpu_check.sh --gpus 2 --dry-run   # print what would run, even without a GPU
#
# Time: the CUDA-path suites (latency, peak memory, reclamation, API consistency; --suites all for every suite)
# over the 6 default models: a few seconds of timed extraction per model, and 3 fresh processes per model for
# memory and reclamation (each: start, context, load, measure); every shard runs under a hard --budget
# (default 420 s: SIGINT, so pytest still writes the records it has, then SIGKILL 60 s later), leaving
# the rest of the 8 minutes for the torch probe, the zoo checkpoints and the report.
# --shard i/n splits the models across runners (a CI matrix); with --gpus g each runner's processes take
# shards (i-1)*g+1 .. i*g of n*g, so every model runs exactly once across all runners and GPUs.
#
# Environment: PYTHON (interpreter to try first, default python3), NM_TORCH (pip spec of the torch to install
# when none imports, default torch==2.13.0; PyPI's Linux wheels are CUDA builds), NM_TORCH_INDEX (optional
# pip index URL for torch), NM_VENV (venv created when PYTHON lacks torch, default .venv-gpu),
# NEURONMAP_SOURCE (default zoo here: offline, deterministic weights, so runs stay comparable with the baseline).
# Exit codes: 0 every shard ran (stated targets may still have failed: see the report), 2 usage error,
# 3 no CUDA device, 4 setup failed, 124 the time budget ran out, else the failing shard's pytest exit code.
# Not pytest-xdist: pytest-benchmark disables itself under xdist; one process per GPU instead.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
START=$(date +%s)

GPUS=1
SHARD=1/1
SUITES=cuda
REPORT=1
MODELS=default
DTYPE=""
BUDGET=420          # seconds for the suites; the rest of the 8 minutes is setup and the report
OUT=""
DRY_RUN=0

log() { printf '[gpu_check +%ss] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { local code=$1; shift; printf 'gpu_check: error: %s\n' "$*" >&2; exit "$code"; }
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS=${2:?--gpus needs a number or all}; shift 2 ;;
    --shard) SHARD=${2:?--shard needs i/n}; shift 2 ;;
    --suites) SUITES=${2:?--suites needs cuda, all or a comma list of suite names}; shift 2 ;;
    --no-report) REPORT=0; shift ;;
    --models) MODELS=${2:?--models needs a spec}; shift 2 ;;
    --dtype) DTYPE=${2:?--dtype needs float32, float16 or bfloat16}; shift 2 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die 2 "unknown argument: $1" ;;
  esac
done
case "$GPUS" in all) ;; ''|*[!0-9]*|0) die 2 "--gpus must be a positive integer or all, got '$GPUS'" ;; esac
[[ "$SHARD" =~ ^[0-9]+/[0-9]+$ ]] || die 2 "--shard must be i/n, got '$SHARD'"
RUNNER=$((10#${SHARD%/*})); RUNNERS=$((10#${SHARD#*/}))
{ [ "$RUNNERS" -ge 1 ] && [ "$RUNNER" -ge 1 ] && [ "$RUNNER" -le "$RUNNERS" ]; } || die 2 "--shard i/n needs 1 <= i <= n, got '$SHARD'"
case "$SUITES" in
  cuda) SUITE_PATHS=(suites/test_latency.py suites/test_memory.py suites/test_reclamation.py suites/test_api_consistency.py) ;;
  all) SUITE_PATHS=(suites/) ;;
  *) IFS=',' read -r -a names <<< "$SUITES"; SUITE_PATHS=()
     for n in "${names[@]}"; do
       [ -f "suites/test_$n.py" ] || die 2 "--suites: no suites/test_$n.py"
       SUITE_PATHS+=("suites/test_$n.py")
     done ;;
esac
case "$BUDGET" in ''|*[!0-9]*|0) die 2 "--budget must be a positive number of seconds, got '$BUDGET'" ;; esac
case "$DTYPE" in ''|float32|float16|bfloat16|fp32|fp16|bf16) ;; *) die 2 "--dtype must be float32, float16 or bfloat16" ;; esac

export NEURONMAP_SOURCE=${NEURONMAP_SOURCE:-zoo}
export PIP_DISABLE_PIP_VERSION_CHECK=1
export TOKENIZERS_PARALLELISM=false

# ---- 1. an interpreter with torch: reuse one that imports it, else a venv with NM_TORCH
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || die 4 "no Python interpreter '$PY' (set PYTHON)"
# one interpreter start for every torch fact (importing torch takes seconds): version|cuda|count|reason|names
torch_probe() {
  "$PY" - <<'PYEOF'
import torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
why = ("CPU-only torch build" if torch.version.cuda is None
       else "a CUDA build, but no device or driver is visible") if n == 0 else ""
names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
print("|".join([torch.__version__, str(torch.version.cuda), str(n), why, names]))
PYEOF
}
if probe=$(torch_probe 2>/dev/null); then
  log "reusing the torch of $PY"
else
  VENV=${NM_VENV:-.venv-gpu}
  log "torch does not import in $PY: creating $VENV and installing ${NM_TORCH:-torch==2.13.0}"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || die 4 "could not create the venv $VENV"
  PY="$VENV/bin/python"
  pip_args=(install --quiet "${NM_TORCH:-torch==2.13.0}")
  [ -n "${NM_TORCH_INDEX:-}" ] && pip_args+=(--index-url "$NM_TORCH_INDEX")
  "$PY" -m pip "${pip_args[@]}" || die 4 "pip could not install ${NM_TORCH:-torch==2.13.0} (offline? set PYTHON to an interpreter that has torch)"
  probe=$(torch_probe) || die 4 "torch was installed into $VENV but does not import"
fi
IFS='|' read -r TORCH_VERSION TORCH_CUDA NGPU WHY GPU_NAMES <<< "$probe"
log "torch $TORCH_VERSION, built for CUDA $TORCH_CUDA"

# ---- 2. a CUDA device (a clear message, not a stack trace, when there is none)
if [ "$NGPU" -eq 0 ]; then
  smi="nvidia-smi not found"
  command -v nvidia-smi >/dev/null 2>&1 && smi=$(nvidia-smi -L 2>&1 | head -3 | tr '\n' ' ')
  if [ "$DRY_RUN" -eq 1 ]; then
    log "no CUDA device ($WHY; $smi): dry run continues"
  else
    die 3 "CUDA is not available: $WHY; $smi. This check needs an NVIDIA GPU, its driver and a CUDA build of torch."
  fi
elif [ "$GPUS" = all ]; then
  GPUS=$NGPU
  log "CUDA devices: $NGPU ($GPU_NAMES); one process on each"
elif [ "$GPUS" -gt "$NGPU" ]; then
  die 2 "--gpus $GPUS asked for, but torch sees $NGPU CUDA device(s)"
else
  log "CUDA devices: $NGPU ($GPU_NAMES)"
fi

# ---- 3. the project's other dependencies (torch already satisfies its pin and is left alone)
if ! "$PY" -c 'import adapters, transformers, accelerate, pytest_benchmark, pandas, matplotlib, scipy, pynvml, psutil, filelock, sentencepiece; assert adapters.NEURONMAP' >/dev/null 2>&1; then
  if [ "$DRY_RUN" -eq 1 ]; then
    log "project dependencies missing: would run $PY -m pip install -c constraints/tested.txt -e .[test,gguf]"
  else
    log "installing the project's dependencies"
    "$PY" -m pip install --quiet -c constraints/tested.txt -e ".[test,gguf]" \
      || die 4 "pip could not install the project's dependencies"
  fi
fi

# ---- 4. the suites, one process per GPU, each with its shard, under one time budget
[ "$GPUS" = all ] && GPUS=1  # a dry run without a GPU: show one process
OUT=${OUT:-results/gpu-check/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
TOTAL=$((RUNNERS * GPUS))
IFS=',' read -r -a VISIBLE <<< "${CUDA_VISIBLE_DEVICES:-}"   # respect a pinning the caller already made
pids=()
shards=()
for ((k = 0; k < GPUS; k++)); do
  dev=${VISIBLE[$k]:-$k}
  shard=$(((RUNNER - 1) * GPUS + k + 1))
  cmd=("$PY" -m pytest "${SUITE_PATHS[@]}" --benchmark-only --nm-device cuda --nm-models "$MODELS"
       --nm-results "$OUT" --nm-no-report -p no:cacheprovider -q)
  [ -n "$DTYPE" ] && cmd+=(--nm-dtype "$DTYPE")
  [ "$TOTAL" -gt 1 ] && cmd+=(--nm-shard "$shard/$TOTAL")
  log "shard $shard/$TOTAL on GPU $dev: CUDA_VISIBLE_DEVICES=$dev timeout $BUDGET ${cmd[*]}"
  if [ "$DRY_RUN" -eq 1 ]; then
    continue
  fi
  # SIGINT first: pytest stops like on Ctrl-C and still writes the records it has; a hard kill 60 s later
  CUDA_VISIBLE_DEVICES=$dev timeout -s INT --kill-after=60 "$BUDGET" "${cmd[@]}" > "$OUT/shard-$shard.log" 2>&1 &
  pids+=($!)
  shards+=("$shard")
done
if [ "$DRY_RUN" -eq 1 ]; then
  log "dry run: nothing was run; results would go to $OUT"
  rmdir "$OUT" 2>/dev/null || true
  exit 0
fi

status=0
for ((k = 0; k < GPUS; k++)); do
  rc=0
  shard=${shards[$k]}
  wait "${pids[$k]}" || rc=$?
  log "shard $shard/$TOTAL: pytest exit $rc ($(tail -n 1 "$OUT/shard-$shard.log"))"
  case "$rc" in
    0|1) ;;  # 1: a stated target honestly failed; that is a result, and the report shows it
    124|137) log "shard $shard ran out of its ${BUDGET}s budget"; [ "$status" -eq 0 ] && status=124 ;;
    *) tail -n 40 "$OUT/shard-$shard.log" >&2; [ "$status" -eq 0 ] && status=$rc ;;
  esac
done

# ---- 5. one report over every shard's results file
if ! ls "$OUT"/*.json >/dev/null 2>&1; then
  log "no results files were written to $OUT"
  [ "$status" -eq 0 ] && status=4
elif [ "$REPORT" -eq 1 ]; then
  "$PY" -m harness report "$OUT" --out "$OUT/report" || { log "harness report failed"; [ "$status" -eq 0 ] && status=4; }
  log "report: $OUT/report/report.md"
fi

log "results: $OUT"
if baseline=$("$PY" -m harness.gpu baseline-dir "$OUT" 2>/dev/null); then
  log "to make these the GPU baseline: mkdir -p $baseline && cp \$(ls $OUT/*.json | grep -v benchmark) $baseline/"
fi
log "done in $(($(date +%s) - START)) s, exit $status"
exit "$status"
