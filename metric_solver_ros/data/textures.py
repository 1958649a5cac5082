"""Procedural, periodic grey-level texture patterns and their mip-mapped atlas.

Every pattern is a square, seamlessly tileable grey-level image with values in [0, 1]. A surface
colours a pattern by mixing two colours, ``albedo = (1 - p) * colour_a + p * colour_b``, and maps
one pattern tile onto a metric patch of the surface (its *period* in metres, or the whole face for
the "fit" patterns such as doors). Because the period is metric and consistent per object class
(a brick is 22 cm long, a facade window bay ~3 m), texture scale is a metric depth cue.

The patterns are built once with numpy from a fixed seed (identical in every process and on every
device), laid out in an atlas with wrapped borders, and pre-filtered into a stack of blur levels
(a "mip volume") so that one trilinear ``grid_sample`` call gives anti-aliased texture lookups for
all pixels of a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

TILE_PX = 128
"""Side of one pattern tile [texels]."""

_PAD_PX = 2
_LEVELS = 8  # level l ~ box filter of 2**l texels; the last one is the tile mean
_SEED = 20240607

PATTERNS: tuple[str, ...] = (
    'plain',  # painted plaster, car paint: faint low-frequency noise around 0.5
    'noise_fine',  # asphalt, concrete, carpet, gravel: pink noise
    'noise_blotch',  # grass/dirt patches, stains, clouds: low-frequency noise
    'checker',  # 2 x 2 checker board per tile
    'tiles',  # 4 x 4 tiles with grout lines (grout = 1)
    'bricks',  # running bond, 8 courses x 4 bricks per tile (mortar = 1)
    'stripes',  # 4 boards per tile with a shadow line (siding, blinds)
    'wood',  # distorted grain lines along u
    'planks',  # 4 wooden planks along u with seams and end joints
    'leaves',  # high-contrast foliage blobs
    'facade',  # one window per tile (glass = 1) in a wall (0)
    'facade_tall',  # one tall window per tile
    'door',  # fit: framed door with two panels and a handle
    'drawers',  # fit: three drawers with handles
    'vehicle_glass',  # fit: side windows of a car cabin (glass = 1) with pillars
    'grid',  # 4 x 4 grid of thin lines (ceiling tiles, paving)
    'cells',  # Worley cells: gravel, cobbles, stone
    'window',  # fit: window frame (0) with 2 x 2 panes (1)
    'screen',  # fit: monitor / picture: border (1) around blotchy content
    'clouds',  # soft thresholded noise (sky)
)
"""Pattern names; a pattern's id is its index here."""

PATTERN_ID: dict[str, int] = {name: i for i, name in enumerate(PATTERNS)}
"""Pattern name -> id."""


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Texel-centre coordinates (u right, v down) in [0, 1)."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    return (u + 0.5) / size, (v + 0.5) / size


def _normalise(x: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.0) -> np.ndarray:
    lo, hi = np.percentile(x, [lo_pct, hi_pct])
    return np.clip((x - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def _spectral_noise(
    rng: np.random.Generator, size: int, beta: float, k_min: float = 1.0, k_max: float = 1e9
) -> np.ndarray:
    """Periodic noise with power spectrum ~ 1/|k|^beta (k in cycles per tile), in [0, 1]."""
    white = rng.standard_normal((size, size))
    k = np.fft.fftfreq(size) * size
    kk = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    amp = np.where((kk >= k_min) & (kk <= k_max), np.maximum(kk, 1e-9) ** (-beta / 2.0), 0.0)
    return _normalise(np.real(np.fft.ifft2(np.fft.fft2(white) * amp)))


def _box(u: np.ndarray, v: np.ndarray, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return ((u >= u0) & (u < u1) & (v >= v0) & (v < v1)).astype(np.float64)


def _worley(rng: np.random.Generator, size: int, n_points: int) -> np.ndarray:
    u, v = _coords(size)
    pts = rng.random((n_points, 2))
    best = np.full((size, size), np.inf)
    for px, py in pts:
        du = np.abs(u - px)
        dv = np.abs(v - py)
        du = np.minimum(du, 1.0 - du)
        dv = np.minimum(dv, 1.0 - dv)
        best = np.minimum(best, np.sqrt(du * du + dv * dv))
    return _normalise(best)


def _make_pattern(name: str, rng: np.random.Generator, s: int) -> np.ndarray:  # noqa: C901
    u, v = _coords(s)
    fine = _spectral_noise(rng, s, 1.0, k_min=4.0)
    if name == 'plain':
        return 0.5 + 0.12 * (_spectral_noise(rng, s, 3.0) - 0.5) + 0.03 * (fine - 0.5)
    if name == 'noise_fine':
        return 0.7 * _spectral_noise(rng, s, 1.2) + 0.3 * fine
    if name == 'noise_blotch':
        return _spectral_noise(rng, s, 3.0)
    if name == 'checker':
        c = (np.floor(2 * u) + np.floor(2 * v)) % 2
        return 0.1 + 0.8 * c + 0.1 * (fine - 0.5)
    if name == 'tiles':
        n = 4
        iu, iv = np.floor(u * n).astype(int), np.floor(v * n).astype(int)
        per_tile = rng.uniform(0.0, 0.25, (n, n))[iv, iu]
        fu, fv = (u * n) % 1.0, (v * n) % 1.0
        grout = (np.minimum(fu, 1 - fu) < 0.03) | (np.minimum(fv, 1 - fv) < 0.03)
        return np.where(grout, 0.95, 0.05 + per_tile + 0.08 * (fine - 0.5))
    if name == 'bricks':
        rows, cols = 8, 4
        row = np.floor(v * rows).astype(int)
        shifted = (u * cols + 0.5 * (row % 2)) % cols
        col = np.floor(shifted).astype(int)
        per_brick = rng.uniform(0.0, 0.35, (rows, cols))[row, col]
        fu, fv = shifted % 1.0, (v * rows) % 1.0
        mortar = (np.minimum(fu, 1 - fu) < 0.025) | (np.minimum(fv, 1 - fv) < 0.07)
        return np.where(mortar, 0.95, 0.05 + per_brick + 0.15 * (fine - 0.5))
    if name == 'stripes':
        f = (v * 4) % 1.0
        return np.where(f > 0.92, 0.95, 0.15 + 0.4 * f) + 0.05 * (fine - 0.5)
    if name in ('wood', 'planks'):
        warp = _spectral_noise(rng, s, 3.5)
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (10 * v + 2.5 * warp + 0.3 * np.sin(2 * np.pi * u)))
        wood = 0.25 + 0.45 * grain**3 + 0.2 * fine
        if name == 'wood':
            return wood
        n = 4
        plank = np.floor(v * n).astype(int)
        joints = rng.random(n)
        fv = (v * n) % 1.0
        du = (u - joints[plank]) % 1.0
        seam = (np.minimum(fv, 1 - fv) < 0.03) | (np.minimum(du, 1 - du) < 0.006)
        per_plank = rng.uniform(-0.15, 0.15, n)[plank]
        return np.where(seam, 1.0, np.clip(wood + per_plank, 0, 0.9))
    if name == 'leaves':
        n = 0.6 * _spectral_noise(rng, s, 1.5, k_min=3.0) + 0.4 * _spectral_noise(rng, s, 2.5)
        return np.clip((n - 0.5) * 3.0 + 0.5, 0.0, 1.0)
    if name in ('facade', 'facade_tall'):
        u0, u1, v0, v1 = (0.2, 0.8, 0.3, 0.75) if name == 'facade' else (0.3, 0.7, 0.15, 0.8)
        glass = _box(u, v, u0, v0, u1, v1)
        frame = _box(u, v, u0 - 0.03, v0 - 0.03, u1 + 0.03, v1 + 0.05) - glass
        sill = _box(u, v, u0 - 0.06, v1 + 0.05, u1 + 0.06, v1 + 0.08)
        refl = 0.8 + 0.2 * _spectral_noise(rng, s, 2.0)
        wall = 0.08 * fine
        return np.clip(wall + glass * refl + 0.45 * frame + 0.35 * sill, 0, 1)
    if name == 'door':
        frame = 1.0 - _box(u, v, 0.06, 0.04, 0.94, 1.0)
        p1 = _box(u, v, 0.18, 0.1, 0.82, 0.45) - _box(u, v, 0.2, 0.12, 0.8, 0.43)
        p2 = _box(u, v, 0.18, 0.55, 0.82, 0.92) - _box(u, v, 0.2, 0.57, 0.8, 0.9)
        handle = _box(u, v, 0.8, 0.48, 0.88, 0.52)
        return np.clip(0.1 * fine + 0.5 * frame + 0.4 * (p1 + p2) + handle, 0, 1)
    if name == 'drawers':
        fv = (v * 3) % 1.0
        gap = (np.minimum(fv, 1 - fv) < 0.025) | (np.minimum(u, 1 - u) < 0.02)
        handle = _box(u, fv, 0.4, 0.4, 0.6, 0.5)
        return np.clip(np.where(gap, 1.0, 0.1 * fine) + handle, 0, 1)
    if name == 'vehicle_glass':
        glass = _box(u, v, 0.06, 0.12, 0.47, 0.9) + _box(u, v, 0.53, 0.12, 0.94, 0.9)
        return np.clip(glass * (0.8 + 0.2 * _spectral_noise(rng, s, 2.0)) + 0.05 * fine, 0, 1)
    if name == 'grid':
        fu, fv = (u * 4) % 1.0, (v * 4) % 1.0
        line = (np.minimum(fu, 1 - fu) < 0.02) | (np.minimum(fv, 1 - fv) < 0.02)
        return np.where(line, 0.95, 0.1 + 0.1 * fine)
    if name == 'cells':
        w = _worley(rng, s, 24)
        return np.clip(0.15 + 0.75 * w**0.7 + 0.15 * (fine - 0.5), 0, 1)
    if name == 'window':
        panes = sum(_box(u, v, a, b, a + 0.4, b + 0.4) for a in (0.07, 0.53) for b in (0.07, 0.53))
        return np.clip(panes * (0.8 + 0.2 * _spectral_noise(rng, s, 2.5)) + 0.05 * fine, 0, 1)
    if name == 'screen':
        inner = _box(u, v, 0.06, 0.06, 0.94, 0.94)
        return np.where(inner > 0, _spectral_noise(rng, s, 2.0) * 0.85, 1.0)
    if name == 'clouds':
        n = _spectral_noise(rng, s, 2.6)
        return np.clip((n - 0.45) * 2.5, 0.0, 1.0)
    raise ValueError(f'unknown pattern {name!r}')


def make_patterns(size: int = TILE_PX) -> np.ndarray:
    """Build every pattern of ``PATTERNS``.

    Args:
        size: Tile side [texels].

    Returns:
        float32 array [n_patterns, size, size] in [0, 1], row 0 = top of the tile (v = 1 on a
        surface), each tileable. Identical in every process (fixed seed).
    """
    out = np.empty((len(PATTERNS), size, size), np.float32)
    for i, name in enumerate(PATTERNS):
        rng = np.random.default_rng([_SEED, i])
        out[i] = np.clip(_make_pattern(name, rng, size), 0.0, 1.0)
    return out


def _blur_periodic(tiles: np.ndarray, sigma_px: float) -> np.ndarray:
    """Circular Gaussian blur of each tile (keeps tiles seamless)."""
    if sigma_px <= 0:
        return tiles
    s = tiles.shape[-1]
    k = np.fft.fftfreq(s)
    g = np.exp(-2.0 * np.pi**2 * sigma_px**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(tiles) * g)).astype(np.float32)


@dataclass(frozen=True)
class TextureAtlas:
    """A mip volume of all patterns, ready for ``grid_sample``.

    Attributes:
        volume: [1, 1, levels, atlas_h, atlas_w] float32; level l is blurred to ~2**l texels.
        origin_px: [n_patterns, 2] (x, y) texel offset of each tile's first texel in the atlas.
        tile_px: Tile side [texels].
        levels: Number of blur levels.
    """

    volume: torch.Tensor
    origin_px: torch.Tensor
    tile_px: int
    levels: int

    def sample(
        self, pattern: torch.Tensor, u: torch.Tensor, v: torch.Tensor, level: torch.Tensor
    ) -> torch.Tensor:
        """Look up patterns with trilinear (mip-mapped) filtering.

        Args:
            pattern: Pattern id per point (integer tensor).
            u: Horizontal texture coordinate [tiles]; 1 = one period (wraps).
            v: Vertical texture coordinate [tiles], increasing upwards on a surface (wraps).
            level: Blur level per point (float, clamped to [0, levels - 1]); ~log2 of texels per
                pixel.

        Returns:
            Pattern values in [0, 1], same shape as ``u``.
        """
        shape = u.shape
        depth, ah, aw = self.volume.shape[-3:]
        org = self.origin_px[pattern.reshape(-1)]
        x = org[:, 0] + torch.remainder(u.reshape(-1), 1.0) * self.tile_px
        y = org[:, 1] + (1.0 - torch.remainder(v.reshape(-1), 1.0)) * self.tile_px
        lz = level.reshape(-1).clamp(0.0, depth - 1.0)
        grid = torch.stack(
            (2.0 * x / aw - 1.0, 2.0 * y / ah - 1.0, (2.0 * lz + 1.0) / depth - 1.0), -1
        )
        out = torch.nn.functional.grid_sample(
            self.volume,
            grid.view(1, 1, 1, -1, 3),
            mode='bilinear',
            padding_mode='border',
            align_corners=False,
        )
        return out.view(shape)


_ATLAS_CACHE: dict[str, TextureAtlas] = {}


def texture_atlas(device: torch.device | str = 'cpu') -> TextureAtlas:
    """The pattern atlas on ``device`` (built once per process and device; read-only).

    Args:
        device: Torch device for the volume.

    Returns:
        The ``TextureAtlas``.
    """
    key = str(torch.device(device))
    atlas = _ATLAS_CACHE.get(key)
    if atlas is not None:
        return atlas
    tiles = make_patterns(TILE_PX)
    n = tiles.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell = TILE_PX + 2 * _PAD_PX
    volume = np.zeros((_LEVELS, rows * cell, cols * cell), np.float32)
    origin = np.zeros((n, 2), np.float32)
    for level in range(_LEVELS):
        blurred = _blur_periodic(tiles, 0.0 if level == 0 else 0.5 * 2.0**level)
        padded = np.pad(blurred, ((0, 0), (_PAD_PX, _PAD_PX), (_PAD_PX, _PAD_PX)), mode='wrap')
        for i in range(n):
            r, c = divmod(i, cols)
            volume[level, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = padded[i]
            origin[i] = (c * cell + _PAD_PX, r * cell + _PAD_PX)
    dev = torch.device(device)
    atlas = TextureAtlas(
        volume=torch.from_numpy(volume)[None, None].to(dev),
        origin_px=torch.from_numpy(origin).to(dev),
        tile_px=TILE_PX,
        levels=_LEVELS,
    )
    _ATLAS_CACHE[key] = atlas
    return atlas
