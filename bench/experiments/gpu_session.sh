#!/usr/bin/env bash
# One device call for the questions session 2 left open (bench/NOTES.md), in order of cost.
# Run from the repository root on the GPU host with `carry: [".whl"]` (../shared/gpu-host/wheels.sh):
#   bash bench/experiments/gpu_session.sh [tests|gather|gluon|attention|transformer ...]   (default: all)
# Results land in $OUT; copy them into bench/results/ afterwards.
set -u
R=$PWD
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# the mapped subpackages (vecdit.processors <- processors/, ...) as one importable package
mkdir -p /tmp/pkg/vecdit && cp -r vecdit/* /tmp/pkg/vecdit/ && cp -r processors pipelines samples /tmp/pkg/vecdit/
export PYTHONPATH=/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1
steps=${*:-tests gather gluon attention transformer}
for step in $steps; do
  echo "== $step"
  case $step in
    tests)  # ~2 min: the suite on the GPU (the fused norm/RoPE kernels of session 2 ran only on the CPU)
      (cd /tmp && python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/test_ops.py" \
        "$R/tests/test_ops_api.py" "$R/tests/test_processors.py" 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt") ;;
    gather)  # ~30 s: TB/s of gathered K/V rows, cp.async vs cp.async.bulk
      nvcc -O3 -gencode=arch=compute_90a,code=sm_90a "$R/bench/experiments/gather_bw.cu" -o /tmp/gbw \
        && /tmp/gbw | tee "$OUT/gather-bw.txt" ;;
    gluon)  # ~2 min: warp-specialized Gluon kernel vs the production kernel, same run
      (cd /tmp && python3 "$R/bench/experiments/gluon_sparse_attn.py") ;;
    attention)  # ~4 min: all shapes, random and structured inputs
      (cd /tmp && python3 -m vecdit.bench attention --inputs random structured --out "$OUT") ;;
    transformer)  # ~5 min: HunyuanVideo-720p forward, stock vs vecdit (fused RoPE since session 2)
      (cd /tmp && python3 -m vecdit.bench transformer --models hunyuanvideo-720p --out "$OUT") ;;
    *) echo "unknown step $step" ;;
  esac
done
