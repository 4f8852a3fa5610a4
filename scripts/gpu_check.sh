#!/usr/bin/env bash
# GPU check: run the suites on CUDA over the default models, write results/<...>/<run>.json and one report.
#
# One prepared command, meant to finish in under 8 minutes on one H100 when torch is already installed:
#   scripts/gpu_check.sh                      # one GPU, default models
#   scripts/gpu_check.sh --gpus 4             # 4 processes in parallel, one per GPU (CUDA_VISIBLE_DEVICES),
#                                             # each running shard k/4 of the models (--nm-shard)
#   scripts/gpu_check.sh --dtype bfloat16 --models gpt2,bert-base-uncased --budget 300
#   scripts/gpu_check.sh --gpus 2 --dry-run   # print what would run, even without a GPU
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
MODELS=default
DTYPE=""
BUDGET=420          # seconds for the suites; the rest of the 8 minutes is setup and the report
OUT=""
DRY_RUN=0

log() { printf '[gpu_check +%ss] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { local code=$1; shift; printf 'gpu_check: error: %s\n' "$*" >&2; exit "$code"; }
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS=${2:?--gpus needs a number}; shift 2 ;;
    --models) MODELS=${2:?--models needs a spec}; shift 2 ;;
    --dtype) DTYPE=${2:?--dtype needs float32, float16 or bfloat16}; shift 2 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die 2 "unknown argument: $1" ;;
  esac
done
case "$GPUS" in ''|*[!0-9]*|0) die 2 "--gpus must be a positive integer, got '$GPUS'" ;; esac
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
elif [ "$GPUS" -gt "$NGPU" ]; then
  die 2 "--gpus $GPUS asked for, but torch sees $NGPU CUDA device(s)"
else
  log "CUDA devices: $NGPU ($GPU_NAMES)"
fi

# ---- 3. the project's other dependencies (torch already satisfies its pin and is left alone)
if ! "$PY" -c 'import adapters, transformers, accelerate, pytest_benchmark, pandas, matplotlib, scipy, pynvml, psutil, filelock, sentencepiece; assert adapters.NEURONMAP' >/dev/null 2>&1; then
  if [ "$DRY_RUN" -eq 1 ]; then
    log "project dependencies missing: would run $PY -m pip install -e .[test,gguf]"
  else
    log "installing the project's dependencies"
    "$PY" -m pip install --quiet -e ".[test,gguf]" || die 4 "pip could not install the project's dependencies"
  fi
fi

# ---- 4. the suites, one process per GPU, each with its shard, under one time budget
OUT=${OUT:-results/gpu-check/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
IFS=',' read -r -a VISIBLE <<< "${CUDA_VISIBLE_DEVICES:-}"   # respect a pinning the caller already made
pids=()
for ((k = 0; k < GPUS; k++)); do
  dev=${VISIBLE[$k]:-$k}
  cmd=("$PY" -m pytest suites/ --benchmark-only --nm-device cuda --nm-models "$MODELS" --nm-results "$OUT"
       --nm-no-report -p no:cacheprovider -q)
  [ -n "$DTYPE" ] && cmd+=(--nm-dtype "$DTYPE")
  [ "$GPUS" -gt 1 ] && cmd+=(--nm-shard "$((k + 1))/$GPUS")
  log "shard $((k + 1))/$GPUS on GPU $dev: CUDA_VISIBLE_DEVICES=$dev timeout $BUDGET ${cmd[*]}"
  if [ "$DRY_RUN" -eq 1 ]; then
    continue
  fi
  # SIGINT first: pytest stops like on Ctrl-C and still writes the records it has; a hard kill 60 s later
  CUDA_VISIBLE_DEVICES=$dev timeout -s INT --kill-after=60 "$BUDGET" "${cmd[@]}" > "$OUT/shard-$((k + 1)).log" 2>&1 &
  pids+=($!)
done
if [ "$DRY_RUN" -eq 1 ]; then
  log "dry run: nothing was run; results would go to $OUT"
  rmdir "$OUT" 2>/dev/null || true
  exit 0
fi

status=0
for ((k = 0; k < GPUS; k++)); do
  rc=0
  wait "${pids[$k]}" || rc=$?
  log "shard $((k + 1))/$GPUS: pytest exit $rc ($(tail -n 1 "$OUT/shard-$((k + 1)).log"))"
  case "$rc" in
    0|1) ;;  # 1: a stated target honestly failed; that is a result, and the report shows it
    124|137) log "shard $((k + 1)) ran out of its ${BUDGET}s budget"; [ "$status" -eq 0 ] && status=124 ;;
    *) tail -n 40 "$OUT/shard-$((k + 1)).log" >&2; [ "$status" -eq 0 ] && status=$rc ;;
  esac
done

# ---- 5. one report over every shard's results file
if ls "$OUT"/*.json >/dev/null 2>&1; then
  "$PY" -m harness report "$OUT" --out "$OUT/report" || { log "harness report failed"; [ "$status" -eq 0 ] && status=4; }
else
  log "no results files were written to $OUT"
  [ "$status" -eq 0 ] && status=4
fi

slug=$(printf '%s' "${GPU_NAMES%%,*}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
log "results: $OUT (report: $OUT/report/report.md)"
log "to make these the GPU baseline: mkdir -p results/baselines/gpu/$slug && cp \$(ls $OUT/*.json | grep -v benchmark) results/baselines/gpu/$slug/"
log "done in $(($(date +%s) - START)) s, exit $status"
exit "$status"
