"""Typed model configuration and named presets: THE one place for k, the anchor pool and the taps.

Every number the method leaves open (see ``docs/METHOD.md``) lives here once. A
:class:`MetricSolverConfig` is frozen, validated on construction and travels inside every
checkpoint as JSON (:meth:`MetricSolverConfig.to_dict` / :meth:`MetricSolverConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

K_TAPER: float = 0.025
"""The paper's taper rate ``k`` of the far target ``d_tf = exp(-k (d - a))`` [1/m]."""

DEFAULT_ANCHOR_POOL_M: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 20.0, 40.0, 80.0, 120.0)
"""Default anchor pool [m]: the paper's 2..20 (indoor) and 10..120 (outdoor), plus 0.5 and 1."""

D_TF_EPS: float = 1e-6
"""``d_tf`` below this decodes to +inf ("too far", REP 117).

The far limit is then ``a - ln(eps) / k = a + 552.6 m`` (``representation.far_limit_m``).
"""

ENCODER_TAPS: dict[str, tuple[int, int, int, int]] = {
    'vits': (2, 5, 8, 11),
    'vitb': (2, 5, 8, 11),
    'vitl': (4, 11, 17, 23),
    'vitg': (9, 19, 29, 39),
    'tiny': (2, 5, 8, 11),
}
"""Encoder blocks whose outputs feed the DPT heads (Depth Anything V2's table, plus ``tiny``)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

PRESET_NAMES: tuple[str, ...] = ('vits', 'vitb', 'vitl', 'vitg', 'tiny')
_ALL_PRESET_LABELS: tuple[str, ...] = (*PRESET_NAMES, 'custom')
_FFN_KINDS: tuple[str, ...] = ('mlp', 'swiglu')


@dataclass(frozen=True, kw_only=True)
class MetricSolverConfig:
    """Architecture, representation and input settings of one Metric-Solver model.

    All fields are keyword-only. Sizes are in channels / blocks unless a unit is named.

    Attributes:
        preset: Name of the preset this config derives from ('vits', 'vitb', 'vitl', 'vitg',
            'tiny') or 'custom'. A label only: the other fields define the network.
        embed_dim: ViT token width.
        depth: Number of ViT blocks.
        num_heads: Attention heads per block (``embed_dim`` must be divisible by it).
        mlp_ratio: MLP hidden width / ``embed_dim``.
        ffn: 'mlp' (GELU MLP, ``fc1``/``fc2``) or 'swiglu' (DINOv2's SwiGLUFFNFused,
            ``w12``/``w3``).
        patch_size: ViT patch side [px]; network inputs must have sides that are multiples of it.
        pos_embed_grid: Side of the stored square positional-embedding grid [patches]
            (official DINOv2: 518 / 14 = 37); other inputs interpolate it.
        num_register_tokens: DINOv2 register tokens (0 for the official non-``reg`` models).
        layerscale_init: Initial LayerScale value, or None for no LayerScale.
        interpolate_offset: DINOv2's offset added to the target grid when interpolating the
            positional embeddings (0.1 for the official non-``reg`` models).
        interpolate_antialias: Antialiasing in that interpolation (False for the official models).
        taps: Indices of the 4 blocks whose outputs feed the heads (default: ``ENCODER_TAPS`` of
            the preset, else the last block of each quarter).
        head_features: DPT fusion width (DA-V2 ``features``).
        head_out_channels: Widths of the 4 DPT reassemble stages (DA-V2 ``out_channels``).
        head_hidden: Width of the last hidden map (before the 1x1 depth / mask projections).
        head_out_scale: Heads output at this fraction of the network input size, in (0, 1].
        anchor_dim: Anchor embedding channels concatenated to each tapped feature map.
        anchor_pool_m: Anchor depths of the learnable pool [m], strictly increasing, > 0.
        k: Taper rate of the far representation [1/m].
        d_tf_eps: Far targets below this decode to +inf.
        input_size: Default network input (H, W) [px], multiples of ``patch_size``.
        mean: Per-channel RGB normalisation mean (images in [0, 1]).
        std: Per-channel RGB normalisation standard deviation.
        mask_head: Ablation switch: False drops the mask projection ("w/o mask head").
        far_head: Ablation switch: False drops the far head ("one head, hard cap").
    """

    preset: str = 'custom'
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    ffn: str = 'mlp'
    patch_size: int = 14
    pos_embed_grid: int = 37
    num_register_tokens: int = 0
    layerscale_init: float | None = 1e-5
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    taps: tuple[int, ...] = ()
    head_features: int
    head_out_channels: tuple[int, int, int, int]
    head_hidden: int = 32
    head_out_scale: float = 1.0
    anchor_dim: int = 64
    anchor_pool_m: tuple[float, ...] = DEFAULT_ANCHOR_POOL_M
    k: float = K_TAPER
    d_tf_eps: float = D_TF_EPS
    input_size: tuple[int, int] = (518, 518)
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    mask_head: bool = True
    far_head: bool = True

    def __post_init__(self) -> None:
        """Normalise sequences to tuples, fill default taps and validate every field."""
        for name in ('taps', 'head_out_channels', 'anchor_pool_m', 'input_size', 'mean', 'std'):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ValueError(f'config.{name} must be a sequence, got {value!r}')
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, 'anchor_pool_m', tuple(float(v) for v in self.anchor_pool_m))
        if not self.taps:
            object.__setattr__(self, 'taps', _default_taps(self.preset, self.depth))
        _validate(self)

    @property
    def pool_range_m(self) -> tuple[float, float]:
        """Smallest and largest anchor of the pool [m]."""
        return self.anchor_pool_m[0], self.anchor_pool_m[-1]

    def output_size(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Return the head output (h, w) [px] for a network input (H, W) [px] (scaled, rounded)."""
        return (max(1, round(self.head_out_scale * input_hw[0])),
                max(1, round(self.head_out_scale * input_hw[1])))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (tuples become lists) that ``from_dict`` accepts."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricSolverConfig:
        """Build and validate a config from ``to_dict`` output.

        Raises:
            ValueError: Unknown or missing keys, or any invalid value.
        """
        if not isinstance(d, dict):
            raise ValueError(f'config must be a dict, got {type(d).__name__}')
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'unknown config keys: {", ".join(unknown)}')
        try:
            return cls(**d)
        except TypeError as exc:  # missing required fields
            raise ValueError(f'invalid config: {exc}') from None

    def replace(self, **overrides: Any) -> MetricSolverConfig:
        """Return a validated copy with ``overrides`` applied."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f'unknown config keys: {", ".join(unknown)}')
        return dataclasses.replace(self, **overrides)


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _default_taps(preset: str, depth: int) -> tuple[int, ...]:
    if preset in ENCODER_TAPS and max(ENCODER_TAPS[preset]) < depth:
        return ENCODER_TAPS[preset]
    return tuple(sorted({max(depth * q // 4 - 1, 0) for q in (1, 2, 3, 4)}))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f'invalid config: {message}')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(c: MetricSolverConfig) -> None:  # noqa: C901 - a flat list of checks
    _check(c.preset in _ALL_PRESET_LABELS,
           f'preset {c.preset!r} is not one of {", ".join(_ALL_PRESET_LABELS)}')
    for name in ('embed_dim', 'depth', 'num_heads', 'patch_size', 'pos_embed_grid',
                 'head_features', 'head_hidden', 'anchor_dim'):
        value = getattr(c, name)
        _check(_is_int(value) and value > 0, f'{name} must be a positive int, got {value!r}')
    _check(_is_int(c.num_register_tokens) and c.num_register_tokens >= 0,
           f'num_register_tokens must be an int >= 0, got {c.num_register_tokens!r}')
    _check(c.embed_dim % c.num_heads == 0,
           f'embed_dim {c.embed_dim} is not divisible by num_heads {c.num_heads}')
    _check(_is_number(c.mlp_ratio) and c.mlp_ratio > 0,
           f'mlp_ratio must be > 0, got {c.mlp_ratio!r}')
    _check(c.ffn in _FFN_KINDS, f'ffn must be one of {_FFN_KINDS}, got {c.ffn!r}')
    _check(c.layerscale_init is None or (_is_number(c.layerscale_init) and c.layerscale_init > 0),
           f'layerscale_init must be None or > 0, got {c.layerscale_init!r}')
    _check(_is_number(c.interpolate_offset) and 0 <= c.interpolate_offset < 1,
           f'interpolate_offset must be in [0, 1), got {c.interpolate_offset!r}')
    _check(isinstance(c.interpolate_antialias, bool), 'interpolate_antialias must be a bool')
    _check(len(c.taps) == 4 and all(_is_int(t) for t in c.taps),
           f'taps must be 4 block indices, got {c.taps!r}')
    _check(all(0 <= t < c.depth for t in c.taps) and list(c.taps) == sorted(set(c.taps)),
           f'taps {c.taps} must be strictly increasing block indices in [0, {c.depth - 1}]')
    _check(len(c.head_out_channels) == 4
           and all(_is_int(v) and v > 0 for v in c.head_out_channels),
           f'head_out_channels must be 4 positive ints, got {c.head_out_channels!r}')
    _check(c.head_features >= 2, f'head_features must be >= 2, got {c.head_features}')
    _check(_is_number(c.head_out_scale) and 0 < c.head_out_scale <= 1,
           f'head_out_scale must be in (0, 1], got {c.head_out_scale!r}')
    pool = c.anchor_pool_m
    _check(len(pool) >= 1 and all(math.isfinite(v) and v > 0 for v in pool),
           f'anchor_pool_m must hold finite anchors > 0 [m], got {pool!r}')
    _check(all(b > a for a, b in zip(pool, pool[1:], strict=False)),
           f'anchor_pool_m must be strictly increasing, got {pool!r}')
    _check(_is_number(c.k) and c.k > 0, f'k must be > 0 [1/m], got {c.k!r}')
    _check(_is_number(c.d_tf_eps) and 0 < c.d_tf_eps < 1,
           f'd_tf_eps must be in (0, 1), got {c.d_tf_eps!r}')
    _check(len(c.input_size) == 2 and all(_is_int(v) and v > 0 for v in c.input_size),
           f'input_size must be (H, W) positive ints [px], got {c.input_size!r}')
    _check(all(v % c.patch_size == 0 for v in c.input_size),
           f'input_size {c.input_size} must be multiples of patch_size {c.patch_size} [px]')
    _check(len(c.mean) == 3 and all(_is_number(v) for v in c.mean), 'mean must be 3 numbers')
    _check(len(c.std) == 3 and all(_is_number(v) and v > 0 for v in c.std),
           'std must be 3 numbers > 0')
    _check(isinstance(c.mask_head, bool) and isinstance(c.far_head, bool),
           'mask_head and far_head must be bools')


PRESETS: dict[str, MetricSolverConfig] = {
    'vits': MetricSolverConfig(
        preset='vits', embed_dim=384, depth=12, num_heads=6, head_features=64,
        head_out_channels=(48, 96, 192, 384)),
    'vitb': MetricSolverConfig(
        preset='vitb', embed_dim=768, depth=12, num_heads=12, head_features=128,
        head_out_channels=(96, 192, 384, 768)),
    'vitl': MetricSolverConfig(
        preset='vitl', embed_dim=1024, depth=24, num_heads=16, head_features=256,
        head_out_channels=(256, 512, 1024, 1024)),
    'vitg': MetricSolverConfig(
        preset='vitg', embed_dim=1536, depth=40, num_heads=24, ffn='swiglu', head_features=384,
        head_out_channels=(1536, 1536, 1536, 1536)),
    # The CPU default: a ViT-Tiny-sized encoder trained from scratch and a light head whose
    # full-resolution convolutions run at 4/7 of the input (the native resolution of the last
    # fusion stage, 8x the patch grid, so no final resampling). Widths are multiples of 16
    # (AVX-512 blocks). Chosen by measurement on 2 CPU cores, see docs/MODEL.md.
    'tiny': MetricSolverConfig(
        preset='tiny', embed_dim=192, depth=12, num_heads=3, head_features=16,
        head_out_channels=(16, 32, 64, 128), head_hidden=16, head_out_scale=4 / 7,
        anchor_dim=32, input_size=(266, 350)),
}
"""Named presets; DINOv2 encoder sizes and Depth Anything V2 head sizes for vits..vitg."""


def get_config(preset: str, **overrides: Any) -> MetricSolverConfig:
    """Return the named preset, with ``overrides`` applied and validated.

    Args:
        preset: One of ``PRESETS`` ('vits', 'vitb', 'vitl', 'vitg', 'tiny').
        **overrides: Config fields to change, e.g. ``input_size=(364, 490)``.

    Raises:
        ValueError: Unknown preset name, unknown field or invalid value.
    """
    if preset not in PRESETS:
        raise ValueError(f'unknown model preset {preset!r}; choose one of {", ".join(PRESETS)}')
    return PRESETS[preset].replace(**overrides) if overrides else PRESETS[preset]
