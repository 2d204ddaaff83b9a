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
    tests)  # ~2 min: the suite on the GPU (the fused norm/RoPE kernels of session 2 ran only on the CPU);
            # the Gluon test last and alone, under a timeout: a kernel that deadlocks must not eat the call
      (cd /tmp && timeout 300 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/test_ops.py" \
        "$R/tests/test_ops_api.py" "$R/tests/test_processors.py" -k "not gluon" 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt")
      (cd /tmp && timeout 120 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/test_ops.py" \
        -k gluon 2>&1 | tail -15 | tee -a "$OUT/gpu-tests.txt") ;;
    gluontest)  # the Gluon backend's GPU test alone (edge cases: ragged tails, text range, empty blocks)
      (cd /tmp && timeout 120 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/test_ops.py" \
        -k gluon 2>&1 | tail -15 | tee -a "$OUT/gpu-tests.txt") ;;
    gather)  # ~30 s: TB/s of gathered K/V rows, cp.async vs cp.async.bulk
      nvcc -O3 -gencode=arch=compute_90a,code=sm_90a "$R/bench/experiments/gather_bw.cu" -o /tmp/gbw \
        && /tmp/gbw | tee "$OUT/gather-bw.txt" ;;
    gluon)  # ~2 min: warp-specialized Gluon kernel vs the production kernel, same run
      start=0
      while true; do  # a variant that hangs exits 17 after recording itself: go on with the next
        (cd /tmp && timeout 300 python3 "$R/bench/experiments/gluon_sparse_attn.py" --start $start); rc=$?
        [ $rc -eq 17 ] || break
        start=$(( $(grep -c '"variant"' "$OUT/gluon-sparse-attn.jsonl") ))
      done ;;
    pick)  # the fastest correct Gluon variant of this run, if it beats the Triton kernel, becomes the
           # backend of the steps after it (CONFIG rewritten in the run's copy of the package only)
      cfg=$(python3 - "$OUT/gluon-sparse-attn.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
base = min(r["ms"] for r in rows if r["kernel"].startswith("triton"))
ok = [r for r in rows if "ms" in r and r["kernel"] == "gluon ws" and r["rel_diff_vs_triton"] < 1e-2]
best = min(ok, key=lambda r: r["ms"], default=None)
if best and best["ms"] < base:
    keys = ("BLOCK_N", "STAGES", "PRODUCER_WARPS", "PRODUCER_REGS", "maxnreg")
    print(repr({"BLOCK_M": 64, **{k: best[k] for k in keys}}))
PY
)
      if [ -n "$cfg" ]; then
        sed -i "s/^CONFIG = dict(.*)$/CONFIG = $cfg/" /tmp/pkg/vecdit/ops/_attn_gluon_kernel.py
        export VECDIT_ATTN_KERNEL=gluon; echo "gluon backend: $cfg" | tee "$OUT/picked.txt"
      else echo "triton backend (no faster Gluon variant)" | tee "$OUT/picked.txt"; fi ;;
    segments)  # ~2 min: key segments + lse merge for the Gluon kernel
      (cd /tmp && timeout 400 python3 "$R/bench/experiments/gluon_segments.py") ;;
    profile)  # ~2 min: contiguous vs real lists, then Nsight Compute on one launch of each kernel
      (cd /tmp && python3 "$R/bench/experiments/profile_gluon.py")
      NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
      if [ -n "$NCU" ]; then
        (cd /tmp && timeout 240 "$NCU" -k regex:"gluon_sparse_attn_kernel|vec_sparse_attn_fwd_kernel" -c 2 \
          --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
          --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
          python3 "$R/bench/experiments/profile_gluon.py" --profile-once > "$OUT/ncu-gluon.txt" 2>&1; tail -5 "$OUT/ncu-gluon.txt")
      else echo "no ncu on this host"; fi ;;
    attention)  # ~4 min: all shapes, random and structured inputs
      (cd /tmp && python3 -m vecdit.bench attention --inputs ${ATTN_INPUTS:-random} --shapes ${ATTN_SHAPES:-wan2.1-1.3b-480p wan2.1-14b-720p hunyuanvideo-720p} --out "$OUT") ;;
    transformer)  # ~5 min: HunyuanVideo-720p forward, stock vs vecdit (fused RoPE since session 2)
      (cd /tmp && python3 -m vecdit.bench transformer --models hunyuanvideo-720p --out "$OUT") ;;
    *) echo "unknown step $step" ;;
  esac
done
