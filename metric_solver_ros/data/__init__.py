"""Training data: the ``Sample`` type, the procedural metric world, on-disk loaders, datasets.

- ``sample.Sample``: one RGB image + planar metric depth + intrinsics (shared by all sources).
- ``synthetic``: procedural indoor / outdoor scenes rendered by ray casting in torch
  (``render_scene``, ``render_batch``), exact depth, CPU or CUDA.
- ``rosbag``: a robot's own bag, images with RGB-D or LiDAR ground truth (``BagRGBD``).
- ``synthetic_lidar``: a LiDAR scanner in the synthetic world, test bags with ``/tf_static``.
- ``rgbd_folder``: the generic RGB-D folder format users bring (``RGBDFolder``,
  ``write_rgbd_folder``); ``hypersim`` and ``vkitti2``: public datasets in their published layout.
- ``augment``: crops, resizes, flips and colour jitter that keep metric scale.
- ``datasets``: torch ``Dataset``s (``SyntheticDataset``, ``FolderDataset``, ``MixedDataset``).

See docs/DATA.md.
"""

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    'AugmentConfig': 'augment',
    'BagRGBD': 'rosbag',
    'FolderDataset': 'datasets',
    'MixedDataset': 'datasets',
    'SyntheticDataset': 'datasets',
    'Hypersim': 'hypersim',
    'RGBDFolder': 'rgbd_folder',
    'write_rgbd_folder': 'rgbd_folder',
    'Sample': 'sample',
    'render_batch': 'synthetic',
    'render_scene': 'synthetic',
    'VKITTI2': 'vkitti2',
}
"""Public name -> submodule. Imported on first use (PEP 562), so that synthetic-only training
needs neither OpenCV (the on-disk readers) nor h5py (Hypersim): see tools/gpu_train.sh."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
    globals()[name] = value
    return value
