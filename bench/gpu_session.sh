#!/usr/bin/env bash
# One device call's GPU work, in steps. Run from the repository root on the GPU host with
# `carry: [".whl"]` (../shared/gpu-host/wheels.sh):
#   bash bench/gpu_session.sh [tests|tests-selection|fp8|attention-hv|compensation|attention-wan|index|abab|peers-build|peers|density|selection|pipeline|calibrate|
#                              train-tiny|train-tiny-pair|tiny-quality|kernel-rows|lab ...]
#   (default: tests attention-hv)
# The fp8 variants (`PIPE_VARIANTS="stock vecdit-compile-fp8"`) need only torch (vecdit.fp8.Float8Linear); the `fp8`
# step times torchao's float8 beside it where its wheel travels too (3 MB; torchao 0.17 pairs with the host's torch 2.11):
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl torchao==0.17.0
# The peers (`peers-build`, then `peers`; SageAttention2 for the sage variants too) need `carry: [".whl", ".peers"]` in
# the call that builds them (bench/build_peers.py says how .peers/ is filled); later calls on the warm machine reuse
# /tmp/peers. The README's speed table, one model a call, each variant isolated in one process:
#   PIPE_MODELS=wan2.2-t2v-a14b PIPE_VARIANTS="stock stock-sage-compile-fp8 vecdit-sage-compile-fp8" bash bench/gpu_session.sh peers-build pipeline
# Results land in $OUT (card and date in their names); copy each into its benchmark's folder under bench/results/ and
# update bench/README.md.
set -u
R=$PWD
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# the mapped subpackages (vecdit.processors <- processors/, ...) as one importable package
mkdir -p /tmp/pkg/vecdit && cp -r vecdit/* /tmp/pkg/vecdit/ && cp -r processors pipelines samples /tmp/pkg/vecdit/
# /tmp/peers: the peers' compiled kernels, where the `peers-build` step made them
export PYTHONPATH=/tmp/peers:/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/card.txt"
steps=${*:-tests attention-hv}
for step in $steps; do
  echo "== $step $(date +%T)"
  case $step in
    tests)  # the tile-order kernels and the Gluon backend on the GPU, each under a timeout
      (cd /tmp && timeout 240 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/ops/test_tiles.py" \
        "$R/tests/ops/test_attention.py" "$R/tests/ops/test_selection.py" "$R/tests/test_fp8.py" \
        -k "tile or gluon or matches_reference or fp8 or budget or capacity or sample_" 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt")
      (cd /tmp && timeout 240 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/ops/test_compensation.py" 2>&1 \
        | tail -8 | tee "$OUT/gpu-tests-compensation.txt") ;;
    peers-build)  # SageAttention2, VSA's ThunderKittens kernels and SpargeAttn from the snapshots carried in .peers/
      # (git-ignored; `carry: [".whl", ".peers"]`), built in parallel (bench/build_peers.py); each one whose module is
      # already in /tmp/peers (a warm machine) or in a carried .peers/built/ (peers-built.tar unpacked) is not rebuilt
      mkdir -p /tmp/peers
      if [ -d .peers/built ]; then cp -r .peers/built/. /tmp/peers/ && echo "copied .peers/built"; fi
      built=0
      if ! compgen -G "/tmp/peers/sageattention/_qattn_sm90*.so" > /dev/null; then built=1
        timeout ${BUILD_TIMEOUT:-480} python3 bench/build_peers.py sage --src .peers/SageAttention --dest /tmp/peers \
          > "$OUT/build-sage.json" 2> "$OUT/build-sage.log" &
      fi
      if ! compgen -G "/tmp/peers/fastvideo_kernel/_C/fastvideo_kernel_ops*.so" > /dev/null; then built=1
        timeout ${BUILD_TIMEOUT:-480} python3 bench/build_peers.py vsa --src .peers/fastvideo-kernel --tk .peers/ThunderKittens \
          --dest /tmp/peers > "$OUT/build-vsa.json" 2> "$OUT/build-vsa.log" &
      fi
      if ! compgen -G "/tmp/peers/spas_sage_attn/_qattn*.so" > /dev/null; then built=1
        timeout ${BUILD_TIMEOUT:-480} python3 bench/build_peers.py sparge --src .peers/SpargeAttn --dest /tmp/peers \
          > "$OUT/build-sparge.json" 2> "$OUT/build-sparge.log" &
      fi
      wait
      if [ $built = 1 ]; then
        cat "$OUT"/build-*.json; grep -i -m5 "error" "$OUT"/build-*.log
        tar -C /tmp/peers --exclude=build -cf "$OUT/peers-built.tar" . 2>/dev/null; ls -la "$OUT/peers-built.tar"
      else echo "all three peers already built in /tmp/peers"; fi
      # from /tmp: the repository's vecdit/ lacks the mapped subpackages
      (cd /tmp && timeout 180 python3 -m vecdit.bench peers-check 2>&1 | tail -6 | tee "$OUT/peers-check.txt") ;;
    tests-fp8)  # Float8Linear and the fp8 pipeline path on the GPU
      (cd /tmp && timeout 200 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/test_fp8.py" 2>&1 \
        | tail -5 | tee "$OUT/gpu-tests-fp8.txt") ;;
    tests-selection)  # the selection's kernels (cut, mask pass, expansion) against their references
      # (test_selection.py's name matches "selection": the exclusions keep the step's set of tests)
      (cd /tmp && timeout 200 python3 -m pytest -q -p no:cacheprovider --rootdir=/tmp "$R/tests/ops/test_tiles.py" \
        "$R/tests/ops/test_selection.py" "$R/tests/ops/test_attention.py" \
        -k "(cut or selection or bitmask or capacity or expansion) and not (budget_sizes or running_keeps or sample_scores or sampled_budget)" \
        2>&1 | tail -5 | tee "$OUT/gpu-tests.txt") ;;
    fp8)  # one block's Linear layers at full size: bf16 vs vecdit's Float8Linear (eager, compiled) vs torchao
      (cd /tmp && timeout ${FP8_TIMEOUT:-420} python3 -m vecdit.bench fp8 --out "$OUT" 2>&1 | grep -v "^|.*---" | tail -40) ;;
    attention-hv)
      timeout 420 python3 -m vecdit.bench attention --shapes hunyuanvideo-720p --inputs ${INPUTS:-random structured} \
        --name attention-tiles-hv${RUN:-} --out "$OUT" 2>&1 | grep -v "^|.*---" | tail -40 ;;
    compensation)  # the dropped keys' compensation at HunyuanVideo-720p: its cost per mode and its kernel error
      timeout ${COMP_TIMEOUT:-420} python3 -m vecdit.bench attention --shapes ${COMP_SHAPES:-hunyuanvideo-720p} --inputs structured \
        --variants ${COMP_VARIANTS:-tiles-topk tiles128-topk} --densities ${COMP_DENSITIES:-0.25 0.1} \
        --name attention-compensation --out "$OUT" 2>&1 | grep -v "^|.*---" | tail -30 ;;
    attention-dense)  # the dense baselines (cuDNN, flash, SageAttention2 after peers-build) at the three shapes, beside the preset
      timeout ${AD_TIMEOUT:-300} python3 -m vecdit.bench attention --shapes wan2.1-1.3b-480p wan2.1-14b-720p hunyuanvideo-720p \
        --inputs structured --variants tiles128-topk --densities 0.1 --name attention-sage --out "$OUT" 2>&1 | grep -v "^|.*---" | tail -24 ;;
    attention-wan)
      timeout 420 python3 -m vecdit.bench attention --shapes wan2.1-14b-720p --inputs random structured \
        --name attention-tiles-wan14b --out "$OUT" 2>&1 | grep -v "^|.*---" | tail -40 ;;
    index)
      timeout 420 python3 -m vecdit.bench attention --index-overhead --shapes hunyuanvideo-720p wan2.1-14b-720p \
        --inputs random structured --name attention-tile-index --out "$OUT" 2>&1 | tail -14 ;;
    peers)  # vecdit vs VSA, FlexAttention, SpargeAttn, SageAttention2, cuDNN: time, output error, recall, equal error
      # (after peers-build in this call or on this warm machine); from /tmp like the pipeline step (the repository's
      # vecdit/ lacks the mapped subpackages); the results file is rewritten after each shape
      (cd /tmp && FASTVIDEO_VSA_TRITON=${FASTVIDEO_VSA_TRITON:-0} timeout ${PEER_TIMEOUT:-560} python3 -m vecdit.bench peers \
        --shapes ${PEER_SHAPES:-hunyuanvideo-720p} --inputs ${PEER_INPUTS:-structured} ${PEER_ARGS:-} --out "$OUT" 2>&1 \
        | grep -v "^|.*---" | tail -${PEER_TAIL:-70}) ;;
    calibrate)  # vecdit calibrate's cost on a full-size model (random weights: timing only, its densities mean nothing);
      # CAL_STEPS "2" keeps one call under 10 minutes (about 3 dense steps + 2 captures x 6 replays at gain groups of 10)
      (cd /tmp && timeout ${CAL_TIMEOUT:-560} python3 -m vecdit.pipelines.cli calibrate --model ${CAL_MODEL:-wan2.1-t2v-14b} \
        --random-weights --prompt "a red fox running through snow" --capture-steps ${CAL_STEPS:-2} \
        --gain-group ${CAL_GAIN_GROUP:-10} --target-density 0.1 --output "$OUT/calibrate-${CAL_MODEL:-wan2.1-t2v-14b}.json" 2>&1 \
        | tr '\r' '\n' | grep -v -i warn | tail -12) ;;
    abab)  # tile vs raster order, alternated in one run
      timeout 300 python3 -m vecdit.bench attention --shapes hunyuanvideo-720p --inputs random --densities 0.25 \
        --variants tiles-topk raster-topk tiles-topk raster-topk --name attention-tiles-hv-abab --out "$OUT" 2>&1 | tail -12 ;;
    density)  # achieved vs target density of the top-k rule at full size, under the host-sync check
      timeout 300 python3 -m vecdit.lab density --out "$OUT" 2>&1 | tail -30 ;;
    selection)  # the selection's stages next to the dense time
      timeout 300 python3 -m vecdit.bench selection --shapes ${SEL_SHAPES:-hunyuanvideo-720p wan2.1-14b-720p} --out "$OUT" 2>&1 \
        | grep -v "^|.*---" | tail -20 ;;
    pipeline)  # a whole generation, projected from one step of each kind (PIPE_MODELS, PIPE_VARIANTS)
      (cd /tmp && timeout ${PIPE_TIMEOUT:-560} python3 -m vecdit.bench pipeline --models ${PIPE_MODELS:-wan2.1-t2v-1.3b} \
        --variants ${PIPE_VARIANTS:-stock vecdit vecdit-compile} --repeats ${PIPE_REPEATS:-2} ${PIPE_ARGS:-} --out "$OUT" 2>&1 \
        | grep -v "^|.*---" | tail -24) ;;  # from /tmp: the repository's vecdit/ lacks the mapped subpackages
    train-tiny)  # the tiny video model (TRAIN_MINUTES, default 8.5); resumes from runs/tiny/checkpoint.pt.part* if carried,
      # else TRAIN_ARGS="--init-from $PWD/pipelines/tiny_model --dit-steps N --finish" goes on from the packaged model
      # $OUT returns files of at most 16 MiB: the checkpoint (or the finished pipeline) comes back in 15 MiB parts,
      # `cat runs/tiny/checkpoint.pt.part* > checkpoint.pt` rebuilds it
      mkdir -p /tmp/tiny
      if ls runs/tiny/checkpoint.pt.part* >/dev/null 2>&1; then cat runs/tiny/checkpoint.pt.part* > /tmp/tiny/checkpoint.pt; fi
      (cd /tmp && timeout 560 python3 -m vecdit.pipelines.tiny_train --out /tmp/tiny --max-minutes ${TRAIN_MINUTES:-8.5} \
        ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log" | tail -30)
      rm -f /tmp/tiny/checkpoint.pt.partial
      cp /tmp/tiny/vae-check.png "$OUT/" 2>/dev/null  # written when the VAE stage ends: clips over their reconstructions
      if [ -f /tmp/tiny/pipeline/model_index.json ]; then
        tar -C /tmp/tiny -cf /tmp/tiny-pipeline.tar pipeline && split -b 15m -d /tmp/tiny-pipeline.tar "$OUT/tiny-pipeline.tar.part"
        cp /tmp/tiny/loss.png "$OUT/tiny-loss.png"
      else
        split -b 15m -d /tmp/tiny/checkpoint.pt "$OUT/checkpoint.pt.part"
      fi
      ls -la "$OUT" ;;
    train-tiny-pair)  # two runs on one GPU from the packaged model (TRAIN_MINUTES, default 8.2): the DiT goes on
      # (DIT_ARGS, e.g. "--dit-steps 7400 --batch 48") while the VAE's decoder alone trains (DECODER_ARGS, e.g.
      # "--decoder-steps 1200"); then the decoder joins the DiT's export, which comes back in 15 MiB parts
      done_dit=$(python3 -c "import json; print(json.load(open('pipelines/tiny_model/vecdit_tiny.json'))['steps']['dit'])")
      (cd /tmp && timeout 560 python3 -m vecdit.pipelines.tiny_train --out /tmp/tiny --init-from "$R/pipelines/tiny_model" \
        --finish --max-minutes ${TRAIN_MINUTES:-8.2} ${DIT_ARGS:-} > "$OUT/train-dit.log" 2>&1) &
      (cd /tmp && timeout 560 python3 -m vecdit.pipelines.tiny_train --out /tmp/tiny-decoder --init-from "$R/pipelines/tiny_model" \
        --finish --max-minutes ${TRAIN_MINUTES:-8.2} --dit-steps "$done_dit" ${DECODER_ARGS:-} > "$OUT/train-decoder.log" 2>&1) &
      wait
      grep -v "Warn\|warn\|Loading\|Writing" "$OUT/train-dit.log" | tail -12; grep -v "Warn\|warn\|Loading\|Writing" "$OUT/train-decoder.log" | tail -14
      (cd /tmp && python3 -m vecdit.pipelines.tiny_train --out /tmp/tiny --take-decoder-from /tmp/tiny-decoder/pipeline 2>&1 | tail -2)
      cp /tmp/tiny-decoder/vae-check.png "$OUT/" 2>/dev/null; cp /tmp/tiny/loss.png "$OUT/tiny-loss-dit.png" 2>/dev/null
      cp /tmp/tiny-decoder/loss.png "$OUT/tiny-loss-decoder.png" 2>/dev/null
      tar -C /tmp/tiny -cf /tmp/tiny-pipeline.tar pipeline && split -b 15m -d /tmp/tiny-pipeline.tar "$OUT/tiny-pipeline.tar.part"
      ls -la "$OUT" ;;
    tiny-quality)  # dense vs vecdit on the model train-tiny finished in this call, else on the packaged one
      model=/tmp/tiny/pipeline; [ -f $model/model_index.json ] || model="$R/pipelines/tiny_model"
      (cd /tmp && timeout 300 python3 -m vecdit.pipelines.tiny_quality --model "$model" ${TQ_ARGS:-} --out "$OUT" 2>&1 | tail -30) ;;
    kernel-rows)  # 128-query tiles: the Gluon kernel's layouts and settings (KERNEL_VARIANTS in vecdit/bench/attention.py)
      timeout ${KR_TIMEOUT:-420} python3 -m vecdit.bench attention --shapes ${KR_SHAPES:-hunyuanvideo-720p wan2.1-14b-720p} \
        --inputs structured --variants ${KR_VARIANTS:-tiles128-topk tiles128-programs tiles128-n64 tiles128-seg1 tiles128-seg4 tiles128-n64-seg2} --name attention-kernel-rows --out "$OUT" 2>&1 \
        | grep -v "^|.*---" | tail -30 ;;
    lab)
      timeout 420 python3 -m vecdit.lab compare --geometry wan2.1-480p wan2.1-720p hunyuanvideo-720p --heads 8 \
        --blocks ${BLOCKS:-32} --densities 0.05 0.1 0.25 0.5 --out "$OUT" 2>&1 | tail -5 ;;
    *) echo "unknown step $step" ;;
  esac
done
