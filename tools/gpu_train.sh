#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool: Python 3.12 + torch with CUDA there, no
# package registry, files come back only through $OUT, at most 8 files of 16 MiB).
#
#   here, once:   make gpu-kit   # cp312 wheels (numpy, safetensors, PyYAML, pytest, py-spy) -> build/gpu_wheels
#   on the GPU:   bash tools/gpu_train.sh BUDGET_S [train.py overrides...]
#                 (device tool: command "bash tools/gpu_train.sh 360", carry ["build/gpu_wheels"])
#
# Synthetic-only training needs no OpenCV, h5py or ROS (test_train checks the imports), so the
# wheels (~22 MB) are all that must travel. Steps, each writing into $OUT as it goes (a call cut
# off at its time limit still returns what is done):
#   1. env.txt: the machine;
#   2. pytest.txt: the engine / model tests, CUDA ones included (they skip on the CPU; GPU_TESTS=0
#      skips this step);
#   3. a 20-step CUDA training run (fails fast if a CUDA path is broken): its tail into env.txt,
#      or smoke.txt when it fails;
#   3b. train_step.jsonl: with PROFILE=1, benchmarks/train_step.py on CUDA per PROFILE_BATCH
#      (default 128) with PROFILE_WORKERS (12) and PROFILE_ARGS: layout / unpickle / render /
#      network step times and whether the scene workers or the training process bound the loop;
#   4. bench.jsonl: with BENCH="vits vitl" (or "default": the bundled model at 640x480),
#      `metric-solver bench` per preset three times: precision auto, auto + --cuda-graphs, fp32
#      (the eager baseline); BENCH_ARGS adds options, e.g. RESULTS.md's
#      "--input-size 518 --resize-mode square" (not used for "default");
#   5. node_load.json, node_load.txt: only with NODE_LOAD=1 and the ROS kit of tools/gpu_ros_kit.sh
#      carried too (ROS_KIT, default build/gpu_ros_kit.tar.gz): the node and a 640x480 camera over
#      Fast DDS (benchmarks/node_load.py) on a random-weights NODE_LOAD_PRESET (vits) checkpoint,
#      CUDA graphs on; NODE_LOAD_ARGS (default "--rate 30 --duration 60") go to node_load.py, and
#      the whole step ends after NODE_LOAD_TIMEOUT_S (240) seconds;
#   6. train.txt, log.jsonl, ckpt_fp16.safetensors (~12 MiB for `tiny`): config/train_gpu.yaml for
#      BUDGET_S seconds of training (no in-run evaluation: evaluate the result here with
#      `metric-solver eval`), or less when DEADLINE_S (seconds after the start by which the
#      whole call must end) leaves less. Extra arguments go to train.py, e.g. to fine-tune the
#      bundled model at its resolution:
#        bash tools/gpu_train.sh 360 --init_from metric_solver_ros/weights/default.safetensors \
#            --image_size [196,252] --warmup_steps 200
#   7. with AB_ARGS (options, e.g. "--loss_weights [1.0,1.0,0.05,0.1]"), a second run with those
#      added trains at the same time on the same GPU (an A/B of equal budget): train_b.txt,
#      ckpt_b_fp16.safetensors; log.jsonl is then left out (train.txt holds the same lines). Give
#      each run half the scene workers (--scene_workers 6).
# The device tool returns at most 8 files from $OUT: env (with the smoke run's tail when it
# passed; smoke.txt when it failed), pytest, train, log and the checkpoint are 5 (4 with
# GPU_TESTS=0); PROFILE adds 1, BENCH 1 (an .err file only when not empty), NODE_LOAD 2, AB_ARGS 1
# (2 less log.jsonl): e.g. GPU_TESTS=0 with PROFILE, NODE_LOAD and AB_ARGS is 8.
set -euo pipefail
budget_s=${1:?usage: tools/gpu_train.sh BUDGET_S [train.py overrides...]}
shift
out=${OUT:-out/gpu}
py=${PYTHON:-python3}
work=$(mktemp -d)
mkdir -p "$out"
started=$SECONDS

wheels=${GPU_WHEELS:-build/gpu_wheels}
if [ -d "$wheels" ]; then  # our dependencies, ahead of whatever the machine has
    "$py" tools/unpack_wheels.py "$work/site" "$wheels"/*.whl  # the machine may lack pip
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$work/site/bin:$PATH"  # the wheels' executables (py-spy)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ date -u; nvidia-smi || true
  # the host: its CPU (the node's per-frame copies run there) and /dev/shm (Fast DDS's shared
  # memory transport for large messages)
  lscpu 2>/dev/null | grep -E '^(Model name|CPU\(s\)|CPU max MHz)' || true; df -h /dev/shm || true
  "$py" -c 'import sys, torch, numpy
print("python", sys.version.split()[0], "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} 2>&1 | tee "$out/env.txt"

if [ "${GPU_TESTS:-1}" = 1 ]; then
    "$py" -m pytest -q -p no:cacheprovider -rs test/test_engine.py test/test_model.py \
        test/test_representation.py test/test_losses.py > "$out/pytest.txt" 2>&1 \
        || echo "pytest failed (pytest.txt)"
    tail -n 4 "$out/pytest.txt"
fi

"$py" -m metric_solver_ros.train --config config/train_smoke.yaml --device auto --num_threads 0 \
    --eval_frames 0 --out_dir "$work/smoke" --resume false > "$out/smoke.txt" 2>&1 \
    && smoke=0 || smoke=$?
if [ "$smoke" -eq 0 ]; then  # passed: its last lines join env.txt ($OUT returns 8 files at most)
    { echo "smoke run passed:"; tail -n 2 "$out/smoke.txt"; } | tee -a "$out/env.txt"
    rm -f "$out/smoke.txt"
else
    tail -n 30 "$out/smoke.txt"
fi

if [ "${PROFILE:-0}" = 1 ]; then  # where a training step's time goes, before training
    for batch in ${PROFILE_BATCH:-128}; do
        # shellcheck disable=SC2086  # PROFILE_ARGS: extra options, word-split on purpose
        timeout 300 "$py" benchmarks/train_step.py --device "${PROFILE_DEVICE:-cuda}" \
            --batch-size "$batch" --workers "${PROFILE_WORKERS:-12}" ${PROFILE_ARGS:-} \
            --json >> "$out/train_step.jsonl" \
            2>> "$out/train_step.err" || echo "train_step --batch-size $batch failed (train_step.err)"
    done
    cat "$out/train_step.jsonl" 2>/dev/null || true
    [ -s "$out/train_step.err" ] || rm -f "$out/train_step.err"  # $OUT returns 8 files at most
fi

bench() {  # bench MODEL_ARGS... : one JSON line into bench.jsonl
    timeout 120 "$py" -m metric_solver_ros.cli bench --device "${BENCH_DEVICE:-cuda}" --json "$@" \
        >> "$out/bench.jsonl" 2>> "$out/bench.err" || echo "bench $* failed (bench.err)"
}
for preset in ${BENCH:-}; do
    if [ "$preset" = default ]; then model=(); else
        # shellcheck disable=SC2206  # BENCH_ARGS: extra bench options, word-split on purpose
        model=(--preset "$preset" ${BENCH_ARGS:-})
    fi
    bench "${model[@]}"
    bench "${model[@]}" --cuda-graphs
    bench "${model[@]}" --precision fp32
done
[ -z "${BENCH:-}" ] || cat "$out/bench.jsonl" 2>/dev/null || true
[ ! -e "$out/bench.err" ] || [ -s "$out/bench.err" ] || rm -f "$out/bench.err"

if [ "${NODE_LOAD:-0}" = 1 ]; then
    # A subshell: the ROS environment stays out of the training run. The wheels' site is on
    # PYTHONPATH already (above), so the kit needs no WHEELS argument. `|| exit`: set -e does
    # not act inside a subshell whose failure is handled (`|| echo`).
    (
        PYTHON="$py" source tools/gpu_ros_env.sh "${ROS_KIT:-build/gpu_ros_kit.tar.gz}" || exit
        # Random weights: the node's latency does not depend on their values.
        "$py" -c 'import sys
from metric_solver_ros.checkpoint import save_checkpoint
from metric_solver_ros.model import create_model
save_checkpoint(sys.argv[2], create_model(sys.argv[1]))' \
            "${NODE_LOAD_PRESET:-vits}" "$work/node_load.safetensors" || exit
        # shellcheck disable=SC2086  # NODE_LOAD_ARGS: options, word-split on purpose
        timeout -k 10 "${NODE_LOAD_TIMEOUT_S:-240}" "$py" benchmarks/node_load.py \
            --device "${NODE_LOAD_DEVICE:-cuda}" --cuda-graphs \
            --checkpoint "$work/node_load.safetensors" --json "$out/node_load.json" \
            ${NODE_LOAD_ARGS:---rate 30 --duration 60}
    ) > "$out/node_load.txt" 2>&1 || echo "node_load failed (node_load.txt)"
    { cat "$out/node_load.json" && echo; } 2>/dev/null || tail -n 30 "$out/node_load.txt"
fi

if [ -n "${DEADLINE_S:-}" ]; then  # leave ~60 s for start-up, saving and bundling
    left=$((DEADLINE_S - (SECONDS - started) - 60))
    [ "$left" -ge "$budget_s" ] || budget_s=$left
    [ "$budget_s" -ge 30 ] || { echo "no time left to train (${budget_s}s)"; exit 0; }
    echo "training budget ${budget_s}s"
fi
[ "$smoke" -eq 0 ] || { echo "smoke run failed: no training"; exit "$smoke"; }
train() {  # train SUFFIX ARGS...: one run into $work/runSUFFIX, its log into trainSUFFIX.txt
    local suffix=$1
    shift
    "$py" -m metric_solver_ros.train --config config/train_gpu.yaml --out_dir "$work/run$suffix" \
        --time_budget_s "$budget_s" --schedule_by_time true --eval_frames 0 "$@" \
        > "$out/train$suffix.txt" 2>&1
}
status=0
status_b=0
if [ -n "${AB_ARGS:-}" ]; then  # two runs at once on the one GPU: as given, and with AB_ARGS
    read -ra ab_args <<< "$AB_ARGS"  # split on spaces, no globbing of '[1.0,...]'
    train "" "$@" & pid=$!
    train _b "$@" "${ab_args[@]}" & pid_b=$!
    wait "$pid" || status=$?
    wait "$pid_b" || status_b=$?
else
    train "" "$@" || status=$?
fi
for suffix in "" ${AB_ARGS:+_b}; do
    grep -E '^step +[0-9]*000 ' "$out/train$suffix.txt" | tail -n 20 || true
    tail -n 4 "$out/train$suffix.txt"
done
[ "$status" -eq 0 ] || { tail -n 30 "$out/train.txt"; exit "$status"; }
[ -n "${AB_ARGS:-}" ] || cp "$work/run/log.jsonl" "$out/log.jsonl"  # train.txt has it too
"$py" tools/bundle_default_model.py "$work/run" "$out/ckpt_fp16.safetensors"
if [ -n "${AB_ARGS:-}" ]; then
    [ "$status_b" -eq 0 ] || { tail -n 30 "$out/train_b.txt"; exit "$status_b"; }
    "$py" tools/bundle_default_model.py "$work/run_b" "$out/ckpt_b_fp16.safetensors"
fi
