# shellcheck shell=bash
# Source on a lent GPU machine (Python 3.12 + torch, no ROS) to run the node and rclpy clients
# from the ROS kit of tools/gpu_ros_kit.sh, from the repository root:
#
#   source tools/gpu_ros_env.sh build/gpu_ros_kit.tar.gz [build/gpu_wheels]
#   python3 benchmarks/node_load.py --device cuda --cuda-graphs --rate 30 --duration 60
#
# KIT: the kit directory, or its .tar.gz (unpacked into a temporary directory). WHEELS: a folder
# of wheels (numpy, PyYAML, ...: `make gpu-kit`) unpacked ahead of the machine's packages, as
# tools/gpu_train.sh does; leave it out when they are importable already.
#
# The temporary directories made are listed in GPU_ROS_ENV_TMP (not exported), to remove when done.
#
# No `set -euo pipefail` here: this runs in the caller's shell, whose options it must not change;
# failures return instead.

_gpu_ros_env() {
    local kit=${1:?usage: source tools/gpu_ros_env.sh KIT_DIR_OR_TAR_GZ [WHEELS_DIR]}
    local wheels=${2:-} repo py=${PYTHON:-python3} tmp
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    # The kit's extension modules are built for CPython 3.12 (PYTHON: the interpreter to check).
    "$py" -c 'import sys
if sys.version_info[:2] != (3, 12):
    sys.exit(f"gpu_ros_env: the kit is for CPython 3.12, {sys.executable} is {sys.version.split()[0]}")
' || return 1
    [ -e "$kit" ] || { echo "gpu_ros_env: no ROS kit at $kit (make gpu-ros-kit)" >&2; return 1; }
    if [ -f "$kit" ]; then  # the tarball, unpacked into a new temporary directory each time
        tmp=$(mktemp -d) || return 1
        GPU_ROS_ENV_TMP="${GPU_ROS_ENV_TMP:-} $tmp"
        tar -C "$tmp" -xzf "$kit" || return 1
        kit=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    fi
    kit=$(cd "$kit" && pwd) || return 1
    [ -d "$kit/python/rclpy" ] || { echo "gpu_ros_env: $kit is not a ROS kit" >&2; return 1; }
    local site=""
    if [ -n "$wheels" ]; then
        site=$(mktemp -d) || return 1
        GPU_ROS_ENV_TMP="${GPU_ROS_ENV_TMP:-} $site"
        "$py" "$repo/tools/unpack_wheels.py" "$site" "$wheels"/*.whl || return 1
        export PATH="$site/bin:$PATH"  # the wheels' executables (py-spy)
    fi
    # The checkout first (metric_solver_ros/__init__.py extends its __path__ to the kit's
    # generated msg/ and srv/), then the kit's Python packages, then the unpacked wheels.
    export PYTHONPATH="$repo:$kit/python${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
    # The wheels' libraries find each other through the loader path (their RPATHs point into the
    # wheel layout, which the ros_wheels_bootstrapper .pth normally papers over with this same
    # variable); typesupport and package lookups go through the ament index.
    export LD_LIBRARY_PATH="$kit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AMENT_PREFIX_PATH="$kit${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
    # Camera-size images over best-effort QoS need it (README, "Transport").
    export FASTDDS_BUILTIN_TRANSPORTS=${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}
    export ROS_LOG_DIR=${ROS_LOG_DIR:-${TMPDIR:-/tmp}/ros_log}
    echo "gpu_ros_env: ROS kit $kit"
}
_gpu_ros_env "$@"
