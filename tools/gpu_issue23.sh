#!/usr/bin/env bash
# Issue 23's GPU measurements in ONE call of the `device` tool (an H100 or H200 machine: Python
# 3.12 + torch with CUDA, no registry; files come back only through $OUT, at most 8).
#
# Here, before the call (from the repository root):
#   make gpu-kit gpu-ros-kit      # cp312 wheels (build/gpu_wheels) and the ROS kit (a few minutes)
#   rm -rf build/baseline && mkdir -p build/baseline && \
#     git archive 22e0f8e metric_solver_ros | tar -x -C build/baseline --exclude='*/weights/*'
#   (22e0f8e: main before issue 23's changes, the baseline every figure is compared with)
# The call (timeout_s 600; the script ends its own steps by DEADLINE_S, default 540 s):
#   device tool: command "bash tools/gpu_issue23.sh",
#                carry ["build/gpu_wheels", "build/gpu_ros_kit.tar.gz", "build/baseline"]
#
# Steps, each writing into $OUT as it goes (a call cut off still returns what is done):
#   1. env.txt: the machine (card, driver, CPU);
#   2. pytest.txt: the engine tests with their CUDA ones (graphs of the whole finish, statistics,
#      CUDA vs CPU) and the frame outputs' tests that need no OpenCV;
#   3. bench.jsonl: `metric-solver bench` (640x480 image, 518x518 network input, bf16, CUDA
#      graphs), one JSON line per run with "variant": vitl and vits, baseline (build/baseline)
#      and now, now + channels-last, now + multi-anchor half, now + both (vits: baseline, now,
#      both); single_ms, batched4_ms, redecode_ms and peak_mem_mb are the issue's goals;
#   4. multi_anchor.jsonl: benchmarks/multi_anchor.py for vitl and vits (decoder alone: per-anchor
#      as before, shared stages, half tail; 1 and 4 anchors, interleaved);
#   5. node_load_before.json, node_load.json: benchmarks/node_load.py, the node on a random-weights
#      vits checkpoint, CUDA graphs, 640x480 camera at 60 Hz with the full organised cloud (the
#      issue's goal: >= 99 % answered, cloud_latency_ms p50 <= 15 ms), the baseline then now
#      (the latter with --profile: where each node thread spends its time).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu23}
py=${PYTHON:-python3}
deadline_s=${DEADLINE_S:-540}
baseline=${BASELINE:-build/baseline}
# A smoke test of this script on a CPU: DEVICE=cpu PRECISION=fp32 PRESETS=tiny SIZE=196 ITERS=3
# GPU_TESTS=0 PYTHON=.venv/bin/python
device=${DEVICE:-cuda}
precision=${PRECISION:-bf16}
iters=${ITERS:-20}
presets=${PRESETS-vitl vits}  # PRESETS="" skips the engine steps
size=${SIZE:-518}
mkdir -p "$out"
started=$SECONDS
left() { echo $((deadline_s - (SECONDS - started))); }

wheels=${GPU_WHEELS:-build/gpu_wheels}
work=$(mktemp -d)
if [ -d "$wheels" ]; then  # our dependencies, ahead of whatever the machine has
    "$py" tools/unpack_wheels.py "$work/site" "$wheels"/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$work/site/bin:$PATH"
fi
base_path=${PYTHONPATH:-}
export PYTHONPATH="$PWD:$base_path"

{ date -u; nvidia-smi || true
  lscpu 2>/dev/null | grep -E '^(Model name|CPU\(s\)|CPU max MHz)' || true
  "$py" -c 'import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "|",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")'
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

# 2. tests (OpenCV is not on the machine: the cloud's host packing tests need it)
if [ "${GPU_TESTS:-1}" = 1 ]; then
    timeout 120 "$py" -m pytest -q -p no:cacheprovider -rs test/test_engine.py \
        test/test_frame_outputs.py -k 'not message_layout and not pack_points and not bundled' \
        > "$out/pytest.txt" 2>&1 || echo "pytest failed or timed out (pytest.txt)"
    tail -n 3 "$out/pytest.txt"
fi

# 3. the engine: baseline and now, same machine, same call
bench() {  # bench LABEL TREE ARGS...: one JSON line with "variant" into bench.jsonl
    local label=$1 tree=$2 json
    shift 2
    [ "$(left)" -gt 150 ] || { echo "skipped $label: deadline"; return; }
    json=$(PYTHONPATH="$tree:$base_path" timeout 120 "$py" -m metric_solver_ros.cli bench \
        --device "$device" --precision "$precision" --input-size "$size" --resize-mode square \
        --cuda-graphs --warmup 5 --iters "$iters" --json "$@" 2>>"$out/bench.err") || { echo "bench $label failed"; return; }
    "$py" -c 'import json, sys
row = json.loads(sys.argv[1]); row["variant"] = sys.argv[2]; print(json.dumps(row))' \
        "$json" "$label" | tee -a "$out/bench.jsonl" | cut -c1-200
}
for preset in $presets; do
    bench "$preset baseline" "$baseline" --preset "$preset"
    bench "$preset now" "$PWD" --preset "$preset"
    if [ "$preset" = vitl ]; then
        bench "$preset now channels-last" "$PWD" --preset "$preset" --channels-last
        bench "$preset now half" "$PWD" --preset "$preset" --multi-anchor-resolution half
    fi
    bench "$preset now channels-last half" "$PWD" --preset "$preset" --channels-last \
        --multi-anchor-resolution half
done
[ -s "$out/bench.err" ] || rm -f "$out/bench.err"

# 4. the decoder alone, per variant (the accuracy part runs on the CPU here: it is skipped)
for preset in $presets; do
    [ "$(left)" -gt 130 ] || break
    timeout 90 "$py" benchmarks/multi_anchor.py --preset "$preset" --size "$size" "$size" \
        --device "$device" --precision "$precision" --rounds "$iters" --json \
        | "$py" -c 'import json, sys; print(json.dumps(json.loads(sys.stdin.read())))' \
        >> "$out/multi_anchor.jsonl" || echo "multi_anchor $preset failed"
done

# 5. the node at 60 Hz with the full cloud, baseline then now
kit=${ROS_KIT:-build/gpu_ros_kit.tar.gz}
if [ -e "$kit" ] && [ "$(left)" -gt 100 ]; then
    # shellcheck source=tools/gpu_ros_env.sh
    PYTHON="$py" source tools/gpu_ros_env.sh "$kit" || echo "ROS kit failed"
    export FASTDDS_BUILTIN_TRANSPORTS=${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}
    ckpt="$work/vits.safetensors"
    # random weights: the node's latency does not depend on their values
    "$py" -c 'import sys
from metric_solver_ros.checkpoint import save_checkpoint
from metric_solver_ros.model import create_model
save_checkpoint(sys.argv[1], create_model("vits"))' "$ckpt"
    load=(--checkpoint "$ckpt" --device "$device" --cuda-graphs --rate 60 --warmup 6 --duration 20
          --points)
    PYTHONPATH="$baseline:$PYTHONPATH" timeout 100 "$py" benchmarks/node_load.py "${load[@]}" \
        --json "$out/node_load_before.json" > "$work/before.txt" 2>&1 \
        || { echo "baseline node_load failed"; tail -n 20 "$work/before.txt"; }
    if [ "$(left)" -gt 60 ]; then
        timeout 100 "$py" benchmarks/node_load.py "${load[@]}" --profile \
            --json "$out/node_load.json" > "$work/now.txt" 2>&1 \
            || { echo "node_load failed"; tail -n 20 "$work/now.txt"; }
    fi
    for f in node_load_before node_load; do
        [ -f "$out/$f.json" ] && "$py" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], "answered", r["answered"], "/", r["published"], "clouds", r["clouds_received"],
      "depth p50", r["latency_ms"]["p50"], "cloud p50", (r.get("cloud_latency_ms") or {}).get("p50"))' \
            "$out/$f.json" "$f"
    done
else
    echo "node_load skipped: no ROS kit at $kit (make gpu-ros-kit) or no time left"
fi
echo "done in $((SECONDS - started)) s"
