"""``scene_spec``: the seeded entry point to the indoor and outdoor scene generators."""

from __future__ import annotations

import numpy as np

from metric_solver_ros.data.synthetic.indoor import _indoor
from metric_solver_ros.data.synthetic.outdoor import _outdoor
from metric_solver_ros.data.synthetic.scene import SceneSpec

_KIND_CODE = {'indoor': 1, 'outdoor': 2}


def scene_spec(kind: str, seed: int) -> SceneSpec:
    """Generate the random scene ``seed`` of ``kind``.

    Args:
        kind: ``'indoor'`` or ``'outdoor'``.
        seed: Non-negative integer; every (kind, seed) is a different, reproducible scene.

    Returns:
        The scene description (independent of resolution and device).
    """
    if kind not in _KIND_CODE:
        raise ValueError(f"kind must be 'indoor' or 'outdoor', got {kind!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    rng = np.random.default_rng([seed, _KIND_CODE[kind], 0x5EED])
    spec = _indoor(rng) if kind == 'indoor' else _outdoor(rng)
    spec.seed = int(rng.integers(0, 2**31 - 1))
    return spec
