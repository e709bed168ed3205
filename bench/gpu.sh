#!/usr/bin/env bash
# One script for one GPU (H100/H200), under 8 minutes, every number beside its peer in one run:
#
#   1. SimCLR train-step throughput on 32x32 CIFAR-10 images, bf16 autocast + channels-last:
#      the image domain's small-image ResNet-18 (regnet "small": widths and depths of ResNet-18, a
#      3x3 stride-2 stem without max-pool) and the stock Hugging Face ResNet-18, each through
#      multissl's engine step and through a lightly-style loop (lightly's per-sample transforms in
#      8 DataLoader workers), with the model-only floor (bench/train_throughput.py)
#   2. the contrastive loss kernels at batch 4,096-32,768 against their matmul floor (bench/losses.py)
#   3. the online evaluation's share of a real run at the default cadence (bench/online_eval_cost.py)
#
# Results land in bench/results/gpu_*.json with the device's name; bench/report.py puts them in
# RESULTS.md. Where ../shared/data is absent (a bare GPU machine gets only the repository), the
# images are synthetic CIFAR-layout PNGs: decoding and views cost the same, the kNN values of
# step 3 then mean nothing (its cost does).
#
#   bash bench/gpu.sh              # on the GPU machine
#   bash bench/gpu.sh --cpu-smoke  # the same steps at toy sizes on the CPU, results to a temp folder
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DATA_ARGS=()
if [[ ! -d ../shared/data/image/cifar10 ]]; then DATA_ARGS=(--data synthetic); fi

if [[ "${1:-}" == "--cpu-smoke" ]]; then
  OUT="$(mktemp -d)"
  echo "gpu.sh --cpu-smoke: toy sizes on the CPU, results in $OUT"
  export OMP_NUM_THREADS=1 ACCELERATE_USE_CPU=true
  "$PYTHON" bench/train_throughput.py --device cpu --encoders regnet-small resnet18 --channels-last --bf16 off \
      --batch 8 --warmup 1 --steps 1 --rounds 1 --workers 0 "${DATA_ARGS[@]}" --output "$OUT/gpu_train_throughput.json"
  "$PYTHON" bench/losses.py --device cpu --batches 64 --dims 16 --losses nt_xent clip_loss info_nce_queue \
      --repetitions 1 --output "$OUT/gpu_losses.json"
  "$PYTHON" bench/online_eval_cost.py --device cpu --steps 3 --batch 16 --rows 64 --data synthetic \
      --output "$OUT/gpu_online_eval_cost.json"
  echo "smoke run done: $(ls "$OUT")"
  exit 0
fi

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --cpu-smoke on a CPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
started=$(date +%s)
# 1. ~3 minutes: 2 encoders x (floor, multissl, lightly-style) x bf16, batch 512, 2 rounds of 10 timed steps
timeout 240 "$PYTHON" bench/train_throughput.py --device cuda --encoders regnet-small resnet18 --channels-last \
    --bf16 on --batch 512 --warmup 3 --steps 10 --rounds 2 --workers 8 "${DATA_ARGS[@]}" \
    --output bench/results/gpu_train_throughput.json
# 2. ~2 minutes: three losses at batch 4k-32k, dim 128 (memory from the allocator's peak)
timeout 180 "$PYTHON" bench/losses.py --device cuda --batches 4096 8192 16384 32768 --dims 128 \
    --losses nt_xent clip_loss info_nce_queue --repetitions 5 --output bench/results/gpu_losses.json
# 3. ~1 minute: a 1,000-step bf16 run of simclr-image-cpu with its default online evaluation
timeout 120 "$PYTHON" bench/online_eval_cost.py --device cuda --precision bf16 --steps 1000 --batch 512 \
    "${DATA_ARGS[@]}" --output bench/results/gpu_online_eval_cost.json
echo "gpu.sh done in $(( $(date +%s) - started )) s; python bench/report.py regenerates bench/RESULTS.md"
