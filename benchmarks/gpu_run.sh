#!/usr/bin/env bash
# The GPU check, as one script for a short lease on a GPU machine: the side-by-side benchmark, then a short
# train.py run with the GPU defaults (bf16, fused AdamW, torch.compile, feature cache, CUDA-graph captioning).
#   bash benchmarks/gpu_run.sh OUT_DIR        (QUICK=1: tiny sizes, to try the script on a CPU first)
set -uo pipefail
out=${1:?usage: gpu_run.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/device.txt"
"$python" -c "import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, transformers.__version__)" \
  2>&1 | tee -a "$out/device.txt"

quick=${QUICK:+--quick --device cpu}
timeout "${BENCH_TIMEOUT:-330}" "$python" benchmarks/bench.py $quick --json "$out/bench.json" 2>&1 | tee "$out/bench.log"

sizes="--builtin_train_size 4000 --builtin_eval_size 256 --max_train_minutes 1"
[ -n "${QUICK:-}" ] && sizes="--builtin_train_size 300 --builtin_eval_size 32 --max_steps 5 --scratch_width 64"
timeout "${TRAIN_TIMEOUT:-240}" "$python" train.py --output_dir /tmp/gpu_run --overwrite_output_dir $sizes --sample_captions 4 \
  --logging_steps 25 2>&1 | tail -n 60 | tee "$out/train.log"
cp /tmp/gpu_run/all_results.json "$out/train_results.json" 2>/dev/null || echo "train.py wrote no results" >&2
