"""Training data: the ``Sample`` type, the procedural metric world, on-disk loaders, datasets.

- ``sample.Sample``: one RGB image + planar metric depth + intrinsics (shared by all sources).
- ``synthetic``: procedural indoor / outdoor scenes rendered by ray casting in torch
  (``render_scene``, ``render_batch``), exact depth, CPU or CUDA.
- ``rgbd_folder``: the generic RGB-D folder format users bring (``RGBDFolder``,
  ``write_rgbd_folder``); ``hypersim`` and ``vkitti2``: public datasets in their published layout.
- ``augment``: crops, resizes, flips and colour jitter that keep metric scale.
- ``datasets``: torch ``Dataset``s (``SyntheticDataset``, ``FolderDataset``, ``MixedDataset``).

See docs/DATA.md.
"""

from metric_solver_ros.data.augment import AugmentConfig
from metric_solver_ros.data.datasets import FolderDataset, MixedDataset, SyntheticDataset
from metric_solver_ros.data.hypersim import Hypersim
from metric_solver_ros.data.rgbd_folder import RGBDFolder, write_rgbd_folder
from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic import render_batch, render_scene
from metric_solver_ros.data.vkitti2 import VKITTI2

__all__ = [
    'VKITTI2',
    'AugmentConfig',
    'FolderDataset',
    'Hypersim',
    'MixedDataset',
    'RGBDFolder',
    'Sample',
    'SyntheticDataset',
    'render_batch',
    'render_scene',
    'write_rgbd_folder',
]
