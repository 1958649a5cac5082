"""What the indoor and outdoor scene generators share.

The ``_Builder`` (materials by class in metric periods, solids placed by their bottom centre),
colour helpers, random intrinsics, people.

Every helper draws from the builder's generator in a fixed order: a scene is reproducible only
while that order stays the same.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np

from metric_solver_ros.data.synthetic.scene import Box, Material


def _clip01(x: float) -> float:
    # Plain Python: np.clip on a scalar costs ~4 us, and scene layout calls this ~500x a scene.
    return min(max(float(x), 0.0), 1.0)


def _lin(rgb: Sequence[float]) -> tuple[float, float, float]:
    """sRGB-ish [0, 1] -> linear."""
    r, g, b = rgb
    return _clip01(r) ** 2.2, _clip01(g) ** 2.2, _clip01(b) ** 2.2


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return _lin(colorsys.hsv_to_rgb(h % 1.0, _clip01(s), _clip01(v)))


class _Builder:
    """Collects materials and boxes while a generator lays out a scene."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.materials: list[Material] = []
        self.boxes: list[Box] = []

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def mat(
        self,
        pattern: str,
        period: tuple[float, float],
        a: tuple[float, float, float],
        b: tuple[float, float, float],
        **kw: object,
    ) -> int:
        off = (self.u(0, 1), self.u(0, 1)) if not kw.get('fit') else (0.0, 0.0)
        self.materials.append(Material(pattern, period, a, b, offset=off, **kw))  # type: ignore[arg-type]
        return len(self.materials) - 1

    def box(
        self,
        x: float,
        y0: float,
        z: float,
        w: float,
        h: float,
        d: float,
        mat: int,
        yaw: float = 0.0,
        shape: str = 'box',
    ) -> None:
        """Solid of bounding size (w, h, d) whose bottom is centred at (x, y0, z)."""
        self.boxes.append(Box((x, y0 + h / 2, z), (w, h, d), yaw, mat, shape))

    def group(
        self,
        x: float,
        z: float,
        yaw: float,
        parts: Sequence[tuple],
    ) -> None:
        """Solids in a local frame (lx, y0, lz, w, h, d, mat[, shape]) turned about (x, z)."""
        c, s = math.cos(yaw), math.sin(yaw)
        for lx, y0, lz, w, h, d, m, *shape in parts:
            self.box(x + c * lx + s * lz, y0, z - s * lx + c * lz, w, h, d, m, yaw, *shape)

    # ---- materials by class (metric periods) -------------------------------------------------
    def paint(self, v_lo: float = 0.55, v_hi: float = 0.95, s_hi: float = 0.3) -> int:
        h, s, v = self.u(0, 1), self.u(0, s_hi), self.u(v_lo, v_hi)
        return self.mat('plain', (3.0, 3.0), _hsv(h, s, v * 0.9), _hsv(h, s, v))

    def wood(self, pattern: str = 'wood') -> int:
        h, v = self.u(0.05, 0.11), self.u(0.3, 0.8)
        per = (
            (self.u(0.4, 1.0), self.u(0.3, 0.6))
            if pattern == 'wood'
            else (
                self.u(1.5, 3.0),
                4 * self.u(0.09, 0.2),
            )
        )
        return self.mat(pattern, per, _hsv(h, 0.6, v * 0.55), _hsv(h, 0.5, v), swap_uv=self.p(0.5))

    def fabric(self) -> int:
        h, s, v = self.u(0, 1), self.u(0.1, 0.7), self.u(0.2, 0.8)
        return self.mat('noise_fine', (self.u(0.2, 0.6),) * 2, _hsv(h, s, v * 0.8), _hsv(h, s, v))

    def solid(self, v_lo: float = 0.1, v_hi: float = 0.9, s_hi: float = 0.8) -> int:
        h, s, v = self.u(0, 1), self.u(0, s_hi), self.u(v_lo, v_hi)
        return self.mat('plain', (1.0, 1.0), _hsv(h, s, v * 0.92), _hsv(h, s, v))

    def grey(self, v_lo: float, v_hi: float, pattern: str = 'plain', period: float = 1.0) -> int:
        v = self.u(v_lo, v_hi)
        tint = self.u(0, 1)
        return self.mat(pattern, (period, period), _hsv(tint, 0.05, v * 0.6), _hsv(tint, 0.05, v))

    def bricks(self) -> int:
        h = self.u(0.0, 0.08) if self.p(0.8) else self.u(0, 1)
        s = self.u(0.3, 0.7) if self.p(0.8) else self.u(0, 0.2)
        v = self.u(0.35, 0.75)
        # brick 0.215 x 0.065 m + 10 mm joints: 4 bricks x 8 courses per tile
        k = self.u(0.9, 1.15)
        return self.mat('bricks', (0.9 * k, 0.6 * k), _hsv(h, s, v), _hsv(0.1, 0.05, 0.8))

    def tiles(self, size_lo: float, size_hi: float) -> int:
        h, s, v = self.u(0, 1), self.u(0, 0.4), self.u(0.4, 0.95)
        size = self.u(size_lo, size_hi)
        grout = _hsv(h, s * 0.3, self.u(0.3, 0.9))
        pattern = 'tiles' if self.p(0.7) else 'checker'
        n = 4 if pattern == 'tiles' else 2
        return self.mat(pattern, (n * size,) * 2, _hsv(h, s, v), grout)

    def foliage(self) -> int:
        h = self.u(0.2, 0.35) if self.p(0.85) else self.u(0.05, 0.12)
        v = self.u(0.25, 0.6)
        return self.mat('leaves', (self.u(0.8, 2.5),) * 2, _hsv(h, 0.7, v * 0.35), _hsv(h, 0.6, v))

    def facade(self) -> int:
        r = self.rng.random()
        floor_h = self.u(2.8, 3.6)
        bay = self.u(2.2, 4.5)
        glass = _hsv(self.u(0.5, 0.65), self.u(0.1, 0.4), self.u(0.15, 0.45))
        if r < 0.25:  # brick facade with windows: bricks drawn as fine noise at this scale
            wall = _hsv(self.u(0.0, 0.08), self.u(0.3, 0.6), self.u(0.35, 0.65))
        elif r < 0.5:  # glass tower
            wall = _hsv(0, 0, self.u(0.2, 0.6))
            return self.mat('facade_tall', (bay * 0.7, floor_h), wall, glass)
        else:
            wall = _hsv(self.u(0, 1), self.u(0, 0.25), self.u(0.5, 0.95))
        pattern = 'facade' if self.p(0.6) else 'facade_tall'
        return self.mat(pattern, (bay, floor_h), wall, glass)


def _near_camera(box: Box, cam: tuple[float, float, float], margin: float) -> bool:
    """Is the camera within ``margin`` of the box (or inside it)?"""
    c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
    ox, oy, oz = (cam[i] - box.centre_m[i] for i in range(3))
    lx, lz = c * ox - s * oz, s * ox + c * oz
    dx = max(abs(lx) - box.size_m[0] / 2, 0.0)
    dy = max(abs(oy) - box.size_m[1] / 2, 0.0)
    dz = max(abs(lz) - box.size_m[2] / 2, 0.0)
    return dx * dx + dy * dy + dz * dz < margin * margin


def _intrinsics(b: _Builder) -> tuple[float, float, float, float]:
    """Random normalised intrinsics: horizontal FOV 40-110 deg, principal point near centre."""
    if b.p(0.7):
        hfov = math.radians(b.u(50, 95))
    else:
        hfov = math.radians(b.u(40, 110))
    fx_w = 0.5 / math.tan(hfov / 2)
    fy_w = fx_w * (1.0 + float(np.clip(b.rng.normal(0, 0.005), -0.02, 0.02)))
    cx_w = 0.5 + float(np.clip(b.rng.normal(0, 0.015), -0.04, 0.04))
    cy_h = 0.5 + float(np.clip(b.rng.normal(0, 0.015), -0.04, 0.04))
    return fx_w, fy_w, cx_w, cy_h


def _person(b: _Builder, x: float, z: float, yaw: float) -> None:
    h = b.u(1.5, 1.95)
    cloth = b.fabric() if b.p(0.6) else b.solid(0.05, 0.8)
    legs = b.solid(0.05, 0.5, 0.5)
    skin = _hsv(b.u(0.02, 0.1), b.u(0.2, 0.6), b.u(0.3, 0.9))
    head = b.mat('plain', (1, 1), skin, skin)
    w = b.u(0.38, 0.5)
    b.group(
        x,
        z,
        yaw,
        [
            (0.0, 0.0, 0.0, w * 0.8, h * 0.47, 0.22, legs),
            (0.0, h * 0.47, 0.0, w, h * 0.4, 0.26, cloth),
            (0.0, h * 0.865, 0.0, 0.17, h * 0.135, 0.21, head, 'ellipsoid'),
        ],
    )
