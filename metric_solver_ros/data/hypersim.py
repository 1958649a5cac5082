"""Reader for Hypersim as published by apple/ml-hypersim.

Layout::

    ROOT/ai_VVV_NNN/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5          HDR colour
    ROOT/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5  distance [m]
    ROOT/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.render_entity_id.hdf5  optional

Each HDF5 file holds its array under the key ``'dataset'``. ``depth_meters`` is the Euclidean
DISTANCE from the camera centre, not planar depth; it is converted with the standard Hypersim
pinhole: 1024 x 768, focal 886.81 px (60 deg horizontal FOV), principal point at the image
centre (``cx = (W - 1) / 2``), scaled with the image width for other resolutions:
``z = distance * f / sqrt(x^2 + y^2 + f^2)`` with (x, y) the pixel offset from the centre. A
minority of Hypersim scenes use tilt-shift cameras (non-standard ``M_cam_from_uv`` in
``metadata_camera_parameters.csv``); they are not corrected here: filter them out with
``scenes=``. Colour is tone-mapped as in ml-hypersim: scale so that the 90th percentile of
brightness (0.3 R + 0.59 G + 0.11 B over pixels with a render entity) maps to 0.8 after gamma,
then gamma 1 / 2.2. Invalid depth (NaN, <= 0) becomes 0. Reading needs ``h5py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metric_solver_ros.data.sample import Sample

HYPERSIM_WIDTH = 1024
HYPERSIM_HEIGHT = 768
HYPERSIM_FOCAL_PX = 886.81
"""Focal length of the standard Hypersim camera at 1024 px width [px]."""

_COLOR_RE = re.compile(r'frame\.(\d+)\.color\.hdf5$')


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('reading Hypersim needs h5py: pip install h5py (see docs/DATA.md)') from e
    return h5py


def read_hdf5(path: Path | str) -> np.ndarray:
    """The ``'dataset'`` array of a Hypersim HDF5 file."""
    h5py = _h5py()
    try:
        with h5py.File(path, 'r') as f:
            if 'dataset' not in f:
                raise ValueError(f"{path}: no 'dataset' array (keys: {list(f.keys())})")
            return np.asarray(f['dataset'])
    except OSError as e:
        raise ValueError(f'{path}: cannot read HDF5 ({e})') from e


def hypersim_intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) [px] of the standard Hypersim camera at ``height`` x ``width``."""
    f = HYPERSIM_FOCAL_PX * width / HYPERSIM_WIDTH
    return f, f, (width - 1) / 2.0, (height - 1) / 2.0


def distance_to_planar(
    distance_m: np.ndarray, intrinsics: tuple[float, float, float, float]
) -> np.ndarray:
    """Convert per-pixel Euclidean distance from the optical centre to planar depth z.

    Args:
        distance_m: HxW distance [m] (NaN / <= 0 invalid).
        intrinsics: (fx, fy, cx, cy) [px].

    Returns:
        HxW float32 planar depth [m]; invalid pixels 0.
    """
    fx, fy, cx, cy = intrinsics
    h, w = distance_m.shape
    x = (np.arange(w, dtype=np.float64) - cx) / fx
    y = (np.arange(h, dtype=np.float64) - cy) / fy
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)
    d = distance_m.astype(np.float64)
    z = d / norm
    ok = np.isfinite(d) & (d > 0)
    return np.where(ok, z, 0.0).astype(np.float32)


def tonemap(rgb_hdr: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """ml-hypersim tone mapping of linear HDR colour to uint8 RGB.

    Args:
        rgb_hdr: HxWx3 linear radiance.
        valid: HxW bool pixels that count for the exposure (default all).

    Returns:
        HxWx3 uint8 RGB.
    """
    gamma = 1.0 / 2.2
    rgb = np.nan_to_num(rgb_hdr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
    sel = brightness[valid] if valid is not None else brightness.ravel()
    if sel.size == 0:
        scale = 1.0
    else:
        current = float(np.percentile(sel, 90))
        scale = 0.0 if current < 1e-4 else 0.8 ** (1.0 / gamma) / current
    out = np.power(np.maximum(scale * rgb, 0.0), gamma)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class Hypersim:
    """Hypersim frames as ``Sample``s (indoor), sorted by scene, camera, frame.

    Args:
        root: Folder holding the ``ai_VVV_NNN`` scene folders.
        scenes: Only these scene names (e.g. ``['ai_001_001']``); default all.
        focal_px: Focal length at 1024 px width [px] (default the standard 886.81).
    """

    def __init__(
        self,
        root: Path | str,
        scenes: Sequence[str] | None = None,
        focal_px: float = HYPERSIM_FOCAL_PX,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'{self.root}: not a folder')
        self.focal_px = float(focal_px)
        wanted = set(scenes) if scenes is not None else None
        self.frames: list[tuple[str, str, str, Path, Path]] = []
        for scene_dir in sorted(self.root.glob('ai_*')):
            if wanted is not None and scene_dir.name not in wanted:
                continue
            for final in sorted((scene_dir / 'images').glob('scene_cam_*_final_hdf5')):
                cam = final.name[: -len('_final_hdf5')]
                geo = final.parent / f'{cam}_geometry_hdf5'
                for color in sorted(final.glob('frame.*.color.hdf5')):
                    m = _COLOR_RE.search(color.name)
                    if m is None:
                        continue
                    depth = geo / f'frame.{m.group(1)}.depth_meters.hdf5'
                    if depth.is_file():
                        self.frames.append((scene_dir.name, cam, m.group(1), color, depth))
        if not self.frames:
            raise ValueError(
                f'{self.root}: no Hypersim frames (ai_*/images/scene_cam_*_final_hdf5/'
                'frame.*.color.hdf5 with matching geometry depth_meters)'
            )

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Sample:
        scene, cam, frame, color_path, depth_path = self.frames[index]
        color = read_hdf5(color_path)
        dist = read_hdf5(depth_path)
        if color.ndim != 3 or color.shape[2] != 3 or dist.shape != color.shape[:2]:
            raise ValueError(f'{color_path}: colour {color.shape} / depth {dist.shape} mismatch')
        ent_path = depth_path.with_name(f'frame.{frame}.render_entity_id.hdf5')
        valid = read_hdf5(ent_path) != -1 if ent_path.is_file() else None
        h, w = dist.shape
        f = self.focal_px * w / HYPERSIM_WIDTH
        k = (f, f, (w - 1) / 2.0, (h - 1) / 2.0)
        return Sample(
            image=tonemap(color, valid),
            depth_m=distance_to_planar(dist, k),
            intrinsics=k,
            name=f'{scene}/{cam}/{frame}',
            scene='indoor',
        )
