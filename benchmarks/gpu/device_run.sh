#!/bin/bash
# One-shot GPU check of rayfront (see benchmarks/run/gpu_check.py). Output under $OUT.
set -u
cd "$(dirname "$0")"
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" ${WHEELS:-.whl/*.whl .proj/*.whl} > "$OUT/install.log" 2>&1 || { echo "pip failed"; tail -5 "$OUT/install.log"; }
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
echo "install done at +$(( $(date +%s) - T0 ))s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'
SMI=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/smi.csv" 2>/dev/null &
  SMI=$!
fi
echo "=== gpu-marked tests"
(cd .proj && timeout -k 5 ${TESTS_T:-120} $PY -m pytest -q -p no:cacheprovider -rs -m "gpu or tensorrt" \
   --continue-on-collection-errors tests/unit/runtimes tests/unit/engine tests/unit/repository \
   --junitxml="$OUT/junit_gpu.xml" 2>&1 | tail -15)
echo "tests done at +$(( $(date +%s) - T0 ))s"
echo "=== gpu check"
QUICK=""; [ "$DEVICE" = cpu ] && QUICK="--quick"
timeout -k 10 ${CHECK_T:-360} $PY -m rayfront.benchmarks.run.gpu_check --device "$DEVICE" $QUICK \
  --out "$OUT/check" --secs ${SECS:-3} --ingress ${INGRESS:-1,6} > "$OUT/check.log" 2>&1
echo "check rc=$? at +$(( $(date +%s) - T0 ))s"
grep -E "^\[|stack|engine|raw" "$OUT/check.log" | grep -v "^|" | tail -40
cat "$OUT/check/gpu_check.md" 2>/dev/null
[ -n "$SMI" ] && kill "$SMI"
cp "$OUT/check/gpu_check.json" "$OUT/" 2>/dev/null
tail -20 "$OUT/check.log" | grep -i -E "error|traceback" | head -5
echo "total +$(( $(date +%s) - T0 ))s"
