"""Test inputs for the node tests: a small checkpoint and a real camera image."""

from __future__ import annotations

import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / 'shared' / 'realdata'


def small_checkpoint(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a small random-weight Metric-Solver checkpoint (fast on a CPU) and return its path."""
    import torch

    from metric_solver_ros.checkpoint import save_checkpoint
    from metric_solver_ros.model import MetricSolverConfig, create_model

    torch.manual_seed(seed)
    config = MetricSolverConfig(preset='custom', embed_dim=48, depth=4, num_heads=2,
                                taps=(0, 1, 2, 3), head_features=16,
                                head_out_channels=(16, 16, 32, 32), anchor_dim=8,
                                input_size=(56, 70))
    save_checkpoint(path, create_model(config))
    return path


def camera_image(width: int = 160, height: int = 120) -> np.ndarray:
    """A camera image of ``width`` x ``height``.

    The real NYU Depth v2 sample from ../shared/realdata when this checkout has it (and OpenCV
    is installed), else a synthetic indoor scene (so that any clone runs the tests).
    """
    try:
        import cv2
    except ImportError:  # the GPU kit (tools/gpu_train.sh) carries no OpenCV
        cv2 = None
    bgr = cv2.imread(str(REALDATA / 'nyu_m3d_00000_rgb.jpg'), cv2.IMREAD_COLOR) if cv2 else None
    if bgr is None:
        from metric_solver_ros.data.synthetic import render_scene

        return render_scene('indoor', 7, height, width).image
    return cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2RGB)
