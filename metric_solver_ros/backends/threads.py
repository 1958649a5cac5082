"""Sharing the CPU with other processes: thread counts and how idle threads wait.

A robot computer always runs other nodes. Two things make an inference process a bad neighbour:

- more compute threads than it can get cores: every parallel region ends in a barrier, and a
  barrier waits for the thread that the scheduler has just taken off its core;
- idle threads that busy-spin (OpenMP's default for a while after each region, ONNX Runtime's
  default), burning the cores that the other processes' threads are waiting for.

So the engine runs a fixed number of threads (``num_threads``, default
:func:`default_num_threads`), asks OpenMP for passive waiting (:func:`prefer_passive_waiting`,
before torch is imported), runs OpenVINO without pinning threads to cores and ONNX Runtime
without spinning (``graph.py``). ``benchmarks/cpu_sharing.py`` measures the effect.
"""

from __future__ import annotations

import os

#: Most threads the default gives the network: beyond 4, batch-1 inference of the small
#: presets gains little and the process only takes more of its neighbours' cores.
MAX_DEFAULT_THREADS = 4


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under ``taskset``/cgroups)."""
    if hasattr(os, 'sched_getaffinity'):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_num_threads() -> int:
    """The ``num_threads: 0`` choice: every usable core, at most :data:`MAX_DEFAULT_THREADS`."""
    return min(usable_cores(), MAX_DEFAULT_THREADS)


def resolve_num_threads(num_threads: int | None) -> int | None:
    """Turn the ``num_threads`` setting into a thread count.

    Args:
        num_threads: None (leave torch's and the runtimes' own defaults), 0 (the default rule,
            :func:`default_num_threads`) or a count >= 1.

    Raises:
        ValueError: For a negative or non-integer count.
    """
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(f'num_threads must be an integer >= 0 (0: automatic), got '
                         f'{num_threads!r}')
    return num_threads or default_num_threads()


def apply_torch_threads(num_threads: int) -> None:
    """Set torch's intra-op threads (process-wide: the engine and its pre/post-processing)."""
    import torch

    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def prefer_passive_waiting() -> bool:
    """Ask OpenMP to put idle threads to sleep instead of spinning (``OMP_WAIT_POLICY``).

    Only an OpenMP runtime loaded after this call reads it, so it must run before torch is
    imported: ``metric_solver_ros/__init__.py`` calls it, which covers the node, the command line
    and any program that imports this package before torch. A value already in the environment
    is kept (``OMP_WAIT_POLICY=ACTIVE`` restores spinning).

    Returns:
        Whether the setting can still take effect (torch not imported yet).
    """
    import sys

    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    return 'torch' not in sys.modules
