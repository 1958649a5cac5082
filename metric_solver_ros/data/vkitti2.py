"""Reader for Virtual KITTI 2 as published (Naver Labs Europe).

Layout::

    ROOT/SceneXX/<variation>/frames/rgb/Camera_C/rgb_NNNNN.jpg
    ROOT/SceneXX/<variation>/frames/depth/Camera_C/depth_NNNNN.png   uint16 [cm], planar z
    ROOT/SceneXX/<variation>/intrinsic.txt   'frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]' rows

Depth is uint16 centimetres of camera z; 65535 marks sky (and anything beyond 655.35 m) and
becomes +inf; 0 (not used by VKITTI2) would be invalid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from metric_solver_ros.data.rgbd_folder import read_rgb
from metric_solver_ros.data.sample import Sample

SKY_VALUE = 65535
"""Depth PNG value of sky [cm]."""

_RGB_RE = re.compile(r'rgb_(\d+)\.(jpg|png)$')


def read_vkitti_depth(path: Path | str) -> np.ndarray:
    """Read a VKITTI2 depth PNG as float32 metres (65535 -> +inf, 0 -> 0 invalid)."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f'{path}: cannot read depth PNG')
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(
            f'{path}: expected single-channel uint16 depth, got {raw.shape} {raw.dtype}'
        )
    depth = raw.astype(np.float32) / 100.0
    depth[raw == SKY_VALUE] = np.inf
    return depth


def read_intrinsics(path: Path | str) -> dict[tuple[int, int], tuple[float, float, float, float]]:
    """Parse ``intrinsic.txt``: (frame, camera id) -> (fx, fy, cx, cy) [px]."""
    path = Path(path)
    out: dict[tuple[int, int], tuple[float, float, float, float]] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or not parts[0].lstrip('-').isdigit():
            continue  # header / blank
        if len(parts) != 6:
            raise ValueError(f'{path}:{line_no}: expected 6 columns, got {len(parts)}')
        frame, cam = int(parts[0]), int(parts[1])
        out[(frame, cam)] = tuple(float(x) for x in parts[2:6])  # type: ignore[assignment]
    if not out:
        raise ValueError(f'{path}: no intrinsics rows')
    return out


class VKITTI2:
    """Virtual KITTI 2 frames as ``Sample``s (outdoor), sorted by scene, variation, camera, frame.

    Args:
        root: Folder holding the ``SceneXX`` folders.
        scenes: Only these scenes (e.g. ``['Scene01']``); default all.
        variations: Only these variations (e.g. ``['clone', 'fog']``); default all.
        cameras: Camera ids to use (0 and/or 1).
    """

    def __init__(
        self,
        root: Path | str,
        scenes: Sequence[str] | None = None,
        variations: Sequence[str] | None = None,
        cameras: Sequence[int] = (0,),
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'{self.root}: not a folder')
        self.frames: list[tuple[str, str, int, int, Path, Path, Path]] = []
        for scene_dir in sorted(self.root.glob('Scene*')):
            if scenes is not None and scene_dir.name not in scenes:
                continue
            for var_dir in sorted(p for p in scene_dir.iterdir() if p.is_dir()):
                if variations is not None and var_dir.name not in variations:
                    continue
                k_path = var_dir / 'intrinsic.txt'
                for cam in cameras:
                    rgb_dir = var_dir / 'frames' / 'rgb' / f'Camera_{cam}'
                    depth_dir = var_dir / 'frames' / 'depth' / f'Camera_{cam}'
                    for rgb in sorted(rgb_dir.glob('rgb_*')):
                        m = _RGB_RE.search(rgb.name)
                        if m is None:
                            continue
                        depth = depth_dir / f'depth_{m.group(1)}.png'
                        if depth.is_file():
                            self.frames.append(
                                (
                                    scene_dir.name,
                                    var_dir.name,
                                    cam,
                                    int(m.group(1)),
                                    rgb,
                                    depth,
                                    k_path,
                                )
                            )
        if not self.frames:
            raise ValueError(
                f'{self.root}: no VKITTI2 frames (SceneXX/<variation>/frames/rgb/Camera_C/'
                'rgb_NNNNN.jpg with matching depth_NNNNN.png)'
            )
        self._k_cache: dict[Path, dict] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Sample:
        scene, var, cam, frame, rgb_path, depth_path, k_path = self.frames[index]
        if k_path not in self._k_cache:
            if not k_path.is_file():
                raise FileNotFoundError(f'{k_path}: missing intrinsics file')
            self._k_cache[k_path] = read_intrinsics(k_path)
        table = self._k_cache[k_path]
        if (frame, cam) not in table:
            raise ValueError(f'{k_path}: no intrinsics for frame {frame} camera {cam}')
        image = read_rgb(rgb_path)
        depth = read_vkitti_depth(depth_path)
        if depth.shape != image.shape[:2]:
            raise ValueError(f'{rgb_path}: rgb {image.shape[:2]} and depth {depth.shape} differ')
        return Sample(
            image=image,
            depth_m=depth,
            intrinsics=table[(frame, cam)],
            name=f'{scene}/{var}/Camera_{cam}/{frame:05d}',
            scene='outdoor',
        )
