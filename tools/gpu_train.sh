#!/usr/bin/env bash
# One training run on a lent GPU machine (the `device` tool: Python 3.12 + torch with CUDA there,
# no package registry, files come back only through $OUT, at most 8 files of 16 MiB).
#
#   here, once:   make gpu-kit        # cp312 wheels of numpy, safetensors, PyYAML -> build/gpu_wheels
#   on the GPU:   bash tools/gpu_train.sh BUDGET_S [train.py overrides...]
#                 (device tool: command "bash tools/gpu_train.sh 360", carry ["build/gpu_wheels"])
#
# Synthetic-only training needs no OpenCV, h5py or ROS (test_train checks the imports), so the
# three wheels (~18 MB) are all that must travel. Steps: record the machine; a 20-step CUDA smoke
# run (fails fast if a CUDA path is broken); `config/train_gpu.yaml` for BUDGET_S seconds of
# training (no in-run evaluation: evaluate the result here with `metric-solver eval`); the EMA
# weights as float16 (~12 MiB for `tiny`) into $OUT. Extra arguments go to train.py, e.g. to
# fine-tune the bundled model at its resolution:
#   bash tools/gpu_train.sh 360 --init_from metric_solver_ros/models/default.safetensors \
#       --image_size [196,252] --warmup_steps 200
# With BENCH="vits vitl" it first runs `metric-solver bench` on the GPU for those presets
# (640x480 camera image, random weights; BENCH_ARGS adds options, e.g. RESULTS.md's
# "--input-size 518 --resize-mode square") into $OUT/bench.jsonl: the figures
# benchmarks/RESULTS.md wants for the card.
set -euo pipefail
budget_s=${1:?usage: tools/gpu_train.sh BUDGET_S [train.py overrides...]}
shift
out=${OUT:-out/gpu}
py=${PYTHON:-python3}
work=$(mktemp -d)
mkdir -p "$out"

wheels=${GPU_WHEELS:-build/gpu_wheels}
if [ -d "$wheels" ]; then  # our dependencies, ahead of whatever the machine has
    "$py" -m pip install -q --no-index --no-deps --target "$work/site" "$wheels"/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ date -u; nvidia-smi || true; "$py" -c 'import sys, torch, numpy
print("python", sys.version.split()[0], "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} 2>&1 | tee "$out/env.txt"

"$py" -m metric_solver_ros.train --config config/train_smoke.yaml --device auto --num_threads 0 \
    --eval_frames 0 --out_dir "$work/smoke" --resume false > "$out/smoke.txt" 2>&1 \
    || { tail -n 30 "$out/smoke.txt"; exit 1; }
tail -n 2 "$out/smoke.txt"

for preset in ${BENCH:-}; do
    # shellcheck disable=SC2086  # BENCH_ARGS: extra bench options, word-split on purpose
    "$py" -m metric_solver_ros.cli bench --preset "$preset" --device "${BENCH_DEVICE:-cuda}" \
        --json ${BENCH_ARGS:-} \
        >> "$out/bench.jsonl" 2>> "$out/bench.err" || echo "bench $preset failed (bench.err)"
done
[ -z "${BENCH:-}" ] || cat "$out/bench.jsonl" 2>/dev/null || true

status=0
"$py" -m metric_solver_ros.train --config config/train_gpu.yaml --out_dir "$work/run" \
    --time_budget_s "$budget_s" --schedule_by_time true --eval_frames 0 "$@" \
    > "$out/train.txt" 2>&1 || status=$?
grep -E '^step +[0-9]*000 ' "$out/train.txt" | tail -n 20 || true
tail -n 4 "$out/train.txt"
[ "$status" -eq 0 ] || { tail -n 30 "$out/train.txt"; exit "$status"; }
cp "$work/run/log.jsonl" "$out/log.jsonl"
"$py" tools/bundle_default_model.py "$work/run" "$out/ckpt_fp16.safetensors"
