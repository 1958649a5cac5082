"""Test inputs for the node tests: a small checkpoint and a real camera image."""

from __future__ import annotations

import pathlib

import numpy as np


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
    """A camera image of ``width`` x ``height`` (``demo.camera_sample``).

    The real NYU sample, or a synthetic indoor scene in a clone without ../shared.
    """
    from metric_solver_ros.demo import camera_sample

    return camera_sample(width, height, seed=7)[0]
