#!/usr/bin/env bash
# One prepared check for a GPU machine (issue 13 item 7, issue 17 item 5). From a copy of this
# checkout (no venv needed), in under 10 minutes:
#   1. environment: torch (must be preinstalled), the other packages (or wheels in .whl/), the
#      project itself (pip install --no-deps -e .), the GPU;
#   2. methods: one Table 2 cell (resnet50, 224 px, batch 64, bf16; fc, ∆(1), ∆(4), finetune,
#      PAINT) through the project's training path: images/s and peak GPU memory per method; ∆(1)
#      and finetune again in fp32 and in bf16 + channels_last (do they help? measured);
#   3. workload: the JPEG workload on the GPU for resnet50 (JPEGs vs image cache vs feature
#      cache, from host memory and held in GPU memory; data-wait share, GPU utilisation from nvidia-smi), workers from the job's CPUs;
#   4. cuda_tests (GPU only): the tests marked `cuda` (`pytest -m cuda`), which CI skips;
#   5. report: $OUT/gpu_check.json, $OUT/gpu_check.md, and the Markdown printed.
# Each part has a time budget; a failing part is one line here (its log is $OUT/<part>.log) and
# the others still run. Exit status: 0 when every part passed.
#
#   scripts/gpu_check.sh                                   # on the device machine ($OUT set there)
#   scripts/gpu_check.sh --device cpu --quick --no-install # a CPU smoke run of every part (tests)
# Env: OUT (default outputs/gpu_check), PYTHON (python3), GPU_CHECK_CACHE (generated JPEGs and
# caches, default /tmp/deltapatch-gpu-check: never under $OUT, which is copied back),
# BUDGET_METHODS / BUDGET_WORKLOAD (seconds, default 150 / 300).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-outputs/gpu_check}"
PY="${PYTHON:-python3}"
CACHE="${GPU_CHECK_CACHE:-/tmp/deltapatch-gpu-check}"
BUDGET_METHODS="${BUDGET_METHODS:-150}"
BUDGET_WORKLOAD="${BUDGET_WORKLOAD:-300}"
DEVICE=cuda
QUICK=0
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "gpu_check: $*"; }
fail() { echo "gpu_check: ERROR: $*" >&2; exit 1; }
mkdir -p "$OUT" "$CACHE"
: > "$OUT/parts.txt"

# ------------------------------------------------------------------ 1. environment
command -v "$PY" >/dev/null 2>&1 || fail "no '$PY' on PATH; set PYTHON=/path/to/python3"
"$PY" -c 'import torch' 2>/dev/null \
  || fail "torch is not importable by $PY: use a machine image with torch, or put its wheel in .whl/ and rerun"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  say "installing the wheels in .whl/ (offline)"
  "$PY" -m pip install -q --no-index --find-links .whl .whl/*.whl >"$OUT/wheels.log" 2>&1 \
    || say "some wheels in .whl/ did not install (see $OUT/wheels.log)"
fi
missing=$("$PY" - <<'EOF'
import importlib.util as u
need = {"torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow", "timm": "timm", "hydra": "hydra-core",
        "omegaconf": "omegaconf", "safetensors": "safetensors", "torchmetrics": "torchmetrics"}
missing = [pkg for mod, pkg in need.items() if u.find_spec(mod) is None]
if u.find_spec("lightning") is None and u.find_spec("pytorch_lightning") is None:
    missing.append("pytorch-lightning")
print(" ".join(missing))
EOF
)
[ -z "$missing" ] || fail "missing packages: $missing. On a machine with a network and the same Python: \
pip download --only-binary=:all: -d .whl $missing ; copy .whl/ into this checkout and rerun"
if [ "$INSTALL" = 1 ]; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
    || say "pip install --no-deps -e . failed (see $OUT/install.log); running from the checkout via PYTHONPATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import deltapatch' 2>"$OUT/import.log" || fail "cannot import deltapatch: $(tail -n1 "$OUT/import.log")"
if [ "$DEVICE" = cuda ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || fail "torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA device"
  command -v nvidia-smi >/dev/null 2>&1 || say "no nvidia-smi: GPU utilisation will not be sampled"
fi
"$PY" - "$DEVICE" >"$OUT/env.json" <<'EOF'
import json, os, platform, sys, torch
cuda = sys.argv[1] == "cuda"
print(json.dumps({"device": sys.argv[1], "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
                  "gpu": torch.cuda.get_device_name() if cuda else None,
                  "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 1e9 if cuda else None,
                  "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()}))
EOF
say "environment ok: $(cat "$OUT/env.json")"

# ------------------------------------------------------------------ 2-3. the parts
FAILED=0
part() {  # part NAME BUDGET_SECONDS COMMAND...: run with a time limit, one line of outcome
  local name=$1 budget=$2 rc t0 dt msg
  shift 2
  t0=$(date +%s)
  set +e
  timeout --kill-after=10 "$budget" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  set -e
  dt=$(( $(date +%s) - t0 ))
  if [ "$rc" = 0 ]; then
    printf '%s\tok\t%s\t\n' "$name" "$dt" >>"$OUT/parts.txt"
    say "$name: ok (${dt} s)"
    return 0
  fi
  FAILED=1
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    msg="stopped at its budget of ${budget} s"
  else
    msg="exit $rc: $(grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n1 | cut -c1-240)"
  fi
  printf '%s\tfailed\t%s\t%s\n' "$name" "$dt" "$msg" >>"$OUT/parts.txt"
  say "$name: FAILED ($msg; log: $OUT/$name.log)"
}

WORKERS=$("$PY" -c 'from deltapatch.resolvers import loader_workers; print(loader_workers())')
THREADS=$(( WORKERS > 4 ? 4 : (WORKERS > 0 ? WORKERS : 1) ))
if [ "$QUICK" = 1 ]; then
  METHODS_ARGS=(--quick --device "$DEVICE" --variants fp32-cl --variant-methods delta1)
  WORKLOAD_ARGS=(--quick --device "$DEVICE" --backbones resnet18 --workers 0)
else
  METHODS_ARGS=(--device "$DEVICE" --bf16 --backbone resnet50 --image-size 224 --batch-size 64 --steps 30
                --warmup-steps 5 --threads "$THREADS" --variants fp32,bf16-cl --variant-methods delta1,finetune)
  WORKLOAD_ARGS=(--device "$DEVICE" --bf16 --backbones resnet50 --workers "$WORKERS" --images 2000
                 --image-size 224 --batch-size 64 --repeats 2 --warmup 1 --threads "$THREADS")
fi
part methods "$BUDGET_METHODS" "$PY" scripts/bench.py --workload methods --plain "${METHODS_ARGS[@]}" \
  --json "$OUT/methods.json"
part workload "$BUDGET_WORKLOAD" "$PY" scripts/bench.py --workload jpeg --plain --cache-dir "$CACHE" \
  "${WORKLOAD_ARGS[@]}" --json "$OUT/workload.json"
if [ "$DEVICE" = cuda ]; then
  part cuda_tests 180 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests
fi

# ------------------------------------------------------------------ 5. report
"$PY" scripts/bench_report.py "$OUT" || fail "could not write the report (see the parts' logs in $OUT)"
say "written: $OUT/gpu_check.json, $OUT/gpu_check.md"
exit "$FAILED"
