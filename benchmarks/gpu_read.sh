#!/usr/bin/env bash
# The reading recipe on one GPU, as one script for a short lease: draw builtin:text-lines on every core, train a
# larger reader than the CPU job's under a wall-clock budget (the cosine anneals over it), then read the benchmark's
# lines on the GPU (Tesseract's column is filled where the machine has it; read_bench.py skips it otherwise).
#   bash benchmarks/gpu_read.sh OUT_DIR          (QUICK=1: tiny sizes on the CPU, to try the script first)
# Knobs: TRAIN_LINES (160000), TRAIN_MINUTES (4.5), MODEL_DIR (runs/text-lines-gpu), EXTRA (more train.py flags).
# Fonts: a machine without the Debian font packages reads the font files from .cache/fonts (32 MB; fill it where the
# packages are installed with `python -m modeling_vitgpt2.data.reading.fonts --copy .cache/fonts`, then carry it).
set -uo pipefail
[ -d .cache/fonts ] && export VITGPT2_FONTS="${VITGPT2_FONTS:-$PWD/.cache/fonts}"
out=${1:?usage: gpu_read.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-python3}
model=${MODEL_DIR:-runs/text-lines-gpu}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/device.txt"
"$python" -c "import os, torch, transformers, sys; print(sys.version.split()[0], torch.__version__, \
transformers.__version__, os.cpu_count(), 'cores')" 2>&1 | tee -a "$out/device.txt"

# A reader 3.6x the CPU job's (6.9M parameters): ConvNeXt width 192 x 6 blocks (a 768-d feature per 4-px column), GPT-2 256 x 4.
sizes="--builtin_train_size ${TRAIN_LINES:-160000} --num_train_epochs 8 --max_train_minutes ${TRAIN_MINUTES:-4.5}
  --per_device_train_batch_size 128 --dataloader_num_workers 12"
shape="--scratch_width 256 --scratch_layers 4 --reader_vision_width 192 --reader_vision_blocks 6"
device=cuda batch=128
if [ -n "${QUICK:-}" ]; then
  sizes="--builtin_train_size 300 --builtin_eval_size 16 --max_steps 4 --per_device_train_batch_size 8"
  shape="--scratch_width 64 --scratch_layers 1 --reader_vision_width 32 --reader_vision_blocks 1"
  device=cpu batch=16
fi
start=$(date +%s)
# shellcheck disable=SC2086  # the flag lists are split on purpose
"$python" train.py --dataset builtin:text-lines --output_dir "$model" --overwrite_output_dir $sizes $shape \
  --logging_steps 100 --save_steps 100000 --sample_captions 4 ${EXTRA:-} 2>&1 | tee "$out/train.log"
echo "train.py, drawing and evaluation included: $(($(date +%s) - start)) s" | tee -a "$out/train.log"
cp "$model/all_results.json" "$out/train_results.json" || echo "train.py wrote no results" >&2
# The model comes back in parts of at most 15 MB (a lease returns files of up to 16 MB): cat model.tgz.* | tar -xz
tar -czf - --exclude='checkpoint-*' -C "$model" . | split -b 15m - "$out/model.tgz."

quick=${QUICK:+--lines 8 --pages 1}
# shellcheck disable=SC2086
"$python" benchmarks/read_bench.py --model "$model" --device "$device" --batch "$batch" $quick \
  --json "$out/read_bench.json" 2>&1 | tee "$out/read_bench.log"
