"""The generic on-disk RGB-D folder format (what users bring for fine-tuning), reader and writer.

Layout (see docs/DATA.md)::

    ROOT/rgb/<name>.png | <name>.jpg | <name>.jpeg
    ROOT/depth/<name>.png    uint16, metres = value / depth_scale, 0 = invalid
    ROOT/depth/<name>.npy    float32 metres (0 / NaN invalid, +inf sky)
    ROOT/depth/<name>.tiff   float32 metres (single channel), also .tif
    ROOT/intrinsics.json     optional {"fx", "fy", "cx", "cy" [px], "depth_scale"} (default 1000)
    ROOT/intrinsics/<name>.json   optional per-frame override, same keys (any subset)
    ROOT/scene.txt           optional: 'indoor' or 'outdoor'

``.exr`` depth is not supported (the OpenCV wheel used here has no OpenEXR): convert to .npy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from metric_solver_ros.data.sample import Sample

RGB_EXTS = ('.png', '.jpg', '.jpeg')
DEPTH_EXTS = ('.png', '.npy', '.tiff', '.tif', '.exr')
DEFAULT_DEPTH_SCALE = 1000.0
"""uint16 PNG units per metre when ``intrinsics.json`` gives none (millimetres)."""

_KEYS = ('fx', 'fy', 'cx', 'cy')


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f'{path}: cannot read JSON ({e})') from e
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object')
    return data


def read_depth(path: Path | str, depth_scale: float = DEFAULT_DEPTH_SCALE) -> np.ndarray:
    """Read one depth map in metres.

    Args:
        path: ``.png`` (uint16, metres = value / depth_scale, 0 invalid), ``.npy`` (float
            metres), ``.tiff``/``.tif`` (float32 metres).
        depth_scale: Units per metre of a uint16 PNG.

    Returns:
        HxW float32 depth [m] (0 invalid for PNGs).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == '.npy':
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f'{path}: cannot read .npy depth ({e})') from e
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f'{path}: expected HxW float depth, got {depth.shape} {depth.dtype}')
        return depth.astype(np.float32)
    if ext == '.exr':
        raise ValueError(
            f'{path}: .exr depth is not supported (OpenCV here has no OpenEXR); '
            'save float32 metres as .npy instead'
        )
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise ValueError(f'{path}: cannot read depth image')
    if depth.ndim == 3:
        raise ValueError(f'{path}: depth must be single channel, got shape {depth.shape}')
    if ext == '.png':
        if depth.dtype != np.uint16:
            raise ValueError(f'{path}: depth PNG must be uint16, got {depth.dtype}')
        return (depth.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'{path}: float depth expected in {ext}, got {depth.dtype}')
    return depth.astype(np.float32)


def read_rgb(path: Path | str) -> np.ndarray:
    """Read an 8-bit colour image as HxWx3 uint8 RGB, as stored.

    An EXIF orientation tag (phone JPEGs) is ignored: the depth map and the intrinsics are
    registered to the stored pixels, and rotating the image alone would misalign them.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ValueError(f'{path}: cannot read image')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class RGBDFolder:
    """Reader of the RGB-D folder format; item ``i`` is the ``i``-th name in sorted order.

    Args:
        root: Folder with ``rgb/`` and ``depth/``.
        scene: Override of the scene kind (``'indoor'``/``'outdoor'``/``''``); default from
            ``ROOT/scene.txt`` or ``''``.
        strict: Raise on RGB files without depth (and vice versa); if False, skip them.
    """

    def __init__(self, root: Path | str, scene: str | None = None, strict: bool = True) -> None:
        self.root = Path(root)
        rgb_dir, depth_dir = self.root / 'rgb', self.root / 'depth'
        for d in (rgb_dir, depth_dir):
            if not d.is_dir():
                raise FileNotFoundError(f'{self.root}: missing folder {d.name}/ (see docs/DATA.md)')
        rgb = self._index(rgb_dir, RGB_EXTS)
        depth = self._index(depth_dir, DEPTH_EXTS)
        only_rgb = sorted(set(rgb) - set(depth))
        only_depth = sorted(set(depth) - set(rgb))
        if strict and (only_rgb or only_depth):
            raise ValueError(
                f'{self.root}: unpaired frames: rgb without depth {only_rgb[:5]}, '
                f'depth without rgb {only_depth[:5]} (pass strict=False to skip them)'
            )
        self.names = sorted(set(rgb) & set(depth))
        if not self.names:
            raise ValueError(f'{self.root}: no rgb/depth pairs found')
        self._rgb, self._depth = rgb, depth
        self.defaults: dict = {}
        if (self.root / 'intrinsics.json').is_file():
            self.defaults = _read_json(self.root / 'intrinsics.json')
        if scene is None:
            scene_file = self.root / 'scene.txt'
            scene = scene_file.read_text().strip() if scene_file.is_file() else ''
        if scene not in ('indoor', 'outdoor', ''):
            raise ValueError(f"{self.root}: scene must be 'indoor', 'outdoor' or '', got {scene!r}")
        self.scene = scene

    @staticmethod
    def _index(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in exts:
                if p.stem in out:
                    raise ValueError(
                        f'{folder}: two files for frame {p.stem!r}: {out[p.stem].name}, {p.name}'
                    )
                out[p.stem] = p
        return out

    def __len__(self) -> int:
        return len(self.names)

    def params(self, name: str) -> dict:
        """Intrinsics and depth scale of frame ``name`` (per-frame JSON over the shared one)."""
        params = dict(self.defaults)
        frame = self.root / 'intrinsics' / f'{name}.json'
        if frame.is_file():
            params.update(_read_json(frame))
        return params

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} frames')
        name = self.names[index]
        params = self.params(name)
        scale = float(params.get('depth_scale', DEFAULT_DEPTH_SCALE))
        if not scale > 0:
            raise ValueError(f'{self.root}: depth_scale must be > 0, got {scale}')
        image = read_rgb(self._rgb[name])
        depth = read_depth(self._depth[name], scale)
        if depth.shape != image.shape[:2]:
            raise ValueError(
                f'{self.root}: frame {name!r}: depth {depth.shape} and rgb {image.shape[:2]} differ'
            )
        k = None
        present = [key in params for key in _KEYS]
        if any(present):
            if not all(present):
                raise ValueError(f'{self.root}: frame {name!r}: intrinsics need all of {_KEYS}')
            k = tuple(float(params[key]) for key in _KEYS)
            if not all(math.isfinite(x) for x in k) or k[0] <= 0 or k[1] <= 0:
                raise ValueError(f'{self.root}: frame {name!r}: bad intrinsics {k}')
        return Sample(image, depth, k, name=name, scene=self.scene)


def write_rgbd_folder(
    root: Path | str,
    samples: Iterable[Sample],
    depth_scale: float = DEFAULT_DEPTH_SCALE,
    depth_format: str = 'png',
    rgb_format: str = 'png',
) -> list[str]:
    """Write samples in the RGB-D folder format.

    Intrinsics shared by all samples go to ``intrinsics.json``; others to per-frame files.

    Args:
        root: Output folder (created).
        samples: Samples to write; names must be unique (empty names become ``000000``, ...).
        depth_scale: uint16 PNG units per metre (PNG only). Depths beyond 65535 / depth_scale,
            +inf and NaN become 0 (invalid) in PNGs; .npy keeps them.
        depth_format: ``'png'`` (uint16) or ``'npy'`` (float32 metres).
        rgb_format: ``'png'`` (lossless) or ``'jpg'``.

    Returns:
        The frame names written.
    """
    if depth_format not in ('png', 'npy'):
        raise ValueError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
    if rgb_format not in ('png', 'jpg'):
        raise ValueError(f"rgb_format must be 'png' or 'jpg', got {rgb_format!r}")
    if not depth_scale > 0:
        raise ValueError(f'depth_scale must be > 0, got {depth_scale}')
    root = Path(root)
    (root / 'rgb').mkdir(parents=True, exist_ok=True)
    (root / 'depth').mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    intrinsics: dict[str, tuple[float, float, float, float] | None] = {}
    scenes = set()
    for i, s in enumerate(samples):
        name = s.name.replace('/', '_') if s.name else f'{i:06d}'
        if name in intrinsics:
            raise ValueError(f'duplicate frame name {name!r}')
        bgr = cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(root / 'rgb' / f'{name}.{rgb_format}'), bgr):
            raise OSError(f'cannot write {root / "rgb" / name}')
        if depth_format == 'npy':
            np.save(root / 'depth' / f'{name}.npy', s.depth_m.astype(np.float32))
        else:
            d = s.depth_m.astype(np.float64) * depth_scale
            ok = np.isfinite(d) & (d > 0) & (d <= 65535.0)
            png = np.where(ok, np.round(np.where(ok, d, 0.0)), 0).astype(np.uint16)
            if not cv2.imwrite(str(root / 'depth' / f'{name}.png'), png):
                raise OSError(f'cannot write {root / "depth" / name}')
        intrinsics[name] = s.intrinsics
        scenes.add(s.scene)
        names.append(name)
    values = set(intrinsics.values())
    shared: dict = {'depth_scale': float(depth_scale)}
    if len(values) == 1 and None not in values:
        shared.update(dict(zip(_KEYS, next(iter(values)), strict=True)))
    else:
        (root / 'intrinsics').mkdir(exist_ok=True)
        for name, k in intrinsics.items():
            if k is not None:
                text = json.dumps(dict(zip(_KEYS, k, strict=True)))
                (root / 'intrinsics' / f'{name}.json').write_text(text)
    (root / 'intrinsics.json').write_text(json.dumps(shared, indent=1))
    if len(scenes) == 1 and next(iter(scenes)):
        (root / 'scene.txt').write_text(next(iter(scenes)) + '\n')
    return names
