"""Augmentations of ``Sample``s that keep metric scale exact.

Geometry changes move the intrinsics, never the depth values: a crop shifts the principal point,
a resize scales focal lengths and principal point (pixel centres at integer coordinates:
``c' = (c + 0.5) * s - 0.5``), a horizontal flip mirrors ``cx`` (``cx' = W - 1 - cx``). Depth is
resampled with centre-aligned nearest neighbour, so invalid (0 / NaN) and sky (+inf) pixels stay
exactly what they were. Colour jitter touches the image only. Every random choice comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from metric_solver_ros.data.sample import Sample

PATCH_PX = 14
"""ViT patch size: default multiple for output sides [px]."""


def round_to_multiple(x: float, multiple: int = PATCH_PX) -> int:
    """Nearest positive multiple of ``multiple`` to ``x``."""
    return max(multiple, int(round(x / multiple)) * multiple)


def _need_intrinsics(sample: Sample) -> tuple[float, float, float, float]:
    if sample.intrinsics is None:
        raise ValueError(f'sample {sample.name!r} has no intrinsics: cannot keep metric scale')
    return sample.intrinsics


def hflip(sample: Sample) -> Sample:
    """Mirror left-right; ``cx' = W - 1 - cx``.

    Args:
        sample: Input sample.

    Returns:
        The mirrored sample.
    """
    k = sample.intrinsics
    if k is not None:
        k = (k[0], k[1], sample.width - 1 - k[2], k[3])
    return replace(
        sample,
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        depth_m=np.ascontiguousarray(sample.depth_m[:, ::-1]),
        intrinsics=k,
    )


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Cut a window; depth values unchanged, principal point shifted.

    Args:
        sample: Input sample.
        top: First row [px].
        left: First column [px].
        height: Window height [px].
        width: Window width [px].

    Returns:
        The cropped sample.
    """
    if top < 0 or left < 0 or top + height > sample.height or left + width > sample.width:
        raise ValueError(
            f'crop {top},{left} {height}x{width} outside {sample.height}x{sample.width}'
        )
    k = sample.intrinsics
    if k is not None:
        k = (k[0], k[1], k[2] - left, k[3] - top)
    return replace(
        sample,
        image=np.ascontiguousarray(sample.image[top : top + height, left : left + width]),
        depth_m=np.ascontiguousarray(sample.depth_m[top : top + height, left : left + width]),
        intrinsics=k,
    )


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Centre-aligned nearest source index of each of ``dst`` output pixels."""
    scale = src / dst
    return np.clip(np.floor((np.arange(dst) + 0.5) * scale).astype(np.int64), 0, src - 1)


def resize(sample: Sample, height: int, width: int) -> Sample:
    """Resample to ``height`` x ``width``; focal lengths scale, depth values do not.

    The image uses area averaging when shrinking and bilinear when enlarging; depth uses
    centre-aligned nearest neighbour (invalid and +inf pixels stay exact).

    Args:
        sample: Input sample.
        height: Output height [px].
        width: Output width [px].

    Returns:
        The resized sample with ``fx' = fx * width / W``, ``cx' = (cx + 0.5) * width / W - 0.5``
        (same for y).
    """
    if height < 1 or width < 1:
        raise ValueError(f'bad size {height}x{width}')
    import cv2  # lazily: synthetic-only training runs without OpenCV (tools/gpu_train.sh)

    sx, sy = width / sample.width, height / sample.height
    interp = cv2.INTER_AREA if sx * sy < 1.0 else cv2.INTER_LINEAR
    image = cv2.resize(sample.image, (width, height), interpolation=interp)
    iy = nearest_indices(sample.height, height)
    ix = nearest_indices(sample.width, width)
    depth = sample.depth_m[iy[:, None], ix[None, :]]
    k = sample.intrinsics
    if k is not None:
        k = (k[0] * sx, k[1] * sy, (k[2] + 0.5) * sx - 0.5, (k[3] + 0.5) * sy - 0.5)
    return replace(sample, image=image, depth_m=depth, intrinsics=k)


def color_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    hue: float = 0.03,
) -> np.ndarray:
    """Random brightness, contrast, saturation and hue change (in random order).

    Args:
        image: HxWx3 uint8 RGB.
        rng: Random generator.
        brightness: Max relative brightness change.
        contrast: Max relative contrast change.
        saturation: Max relative saturation change.
        hue: Max hue rotation [turns].

    Returns:
        HxWx3 uint8 RGB.
    """
    x = image.astype(np.float32) / 255.0
    ops = rng.permutation(4)
    factors = [
        float(f) for f in rng.uniform(-1.0, 1.0, 4) * (brightness, contrast, saturation, hue)
    ]
    for op in ops:
        if op == 0:
            x = x * (1.0 + factors[0])
        elif op == 1:
            mean = float((x @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
            x = (x - mean) * (1.0 + factors[1]) + mean
        elif op == 2:
            grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            x = (x - grey) * (1.0 + factors[2]) + grey
        elif factors[3] != 0.0:
            import cv2

            hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)  # H in degrees
            hsv[..., 0] = (hsv[..., 0] + 360.0 * factors[3]) % 360.0
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return (x * 255.0 + 0.5).astype(np.uint8)


@dataclass
class AugmentConfig:
    """Random geometric and photometric augmentation settings.

    Attributes:
        scale_range: Zoom range relative to the inference-like resize of ``fit_to_size``
            (1 = none; 1.5 = up to 1.5x larger before the crop). Zooming changes the apparent
            focal length, which a model without camera input cannot tell from a change of
            depth: keep (1, 1) for metric training (the default).
        flip_prob: Probability of a horizontal flip.
        jitter_prob: Probability of colour jitter.
        brightness: Max relative brightness change.
        contrast: Max relative contrast change.
        saturation: Max relative saturation change.
        hue: Max hue rotation [turns].
    """

    scale_range: tuple[float, float] = (1.0, 1.0)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03


def pad(sample: Sample, top: int, bottom: int, left: int, right: int) -> Sample:
    """Add a border: black image, depth 0 (invalid, never supervised); principal point shifted.

    Args:
        sample: Input sample.
        top: Rows added above [px] (>= 0).
        bottom: Rows added below [px] (>= 0).
        left: Columns added on the left [px] (>= 0).
        right: Columns added on the right [px] (>= 0).

    Returns:
        The padded sample.
    """
    if min(top, bottom, left, right) < 0:
        raise ValueError(f'negative padding {top},{bottom},{left},{right}')
    k = sample.intrinsics
    if k is not None:
        k = (k[0], k[1], k[2] + left, k[3] + top)
    border = ((top, bottom), (left, right))
    return replace(
        sample,
        image=np.pad(sample.image, (*border, (0, 0))),
        depth_m=np.pad(sample.depth_m, border),
        intrinsics=k,
    )


def fit_to_size(
    sample: Sample,
    height: int,
    width: int,
    rng: np.random.Generator | None = None,
    scale: float = 1.0,
) -> Sample:
    """Resize like inference (shorter side to the output's shorter side), then crop or pad.

    The inference engine scales an image's shorter side to ``min(input_size)`` whatever its
    aspect (``engine.network_input_size``), so the network sees focal lengths [px] in that
    proportion. Training must match, or metric depth is biased by the ratio: an image narrower
    than ``height`` x ``width`` (a square or portrait one for a landscape output) is therefore not
    zoomed until it covers the output but padded (black, depth 0 = unsupervised) where it falls
    short; what exceeds the output is cropped.

    Args:
        sample: Input sample.
        height: Output height [px].
        width: Output width [px].
        rng: If given, the crop / pad placement is random; else centred.
        scale: Extra zoom >= 1 before cropping (changes the apparent focal length: an
            augmentation that a model without camera input cannot undo).

    Returns:
        A sample of exactly ``height`` x ``width`` with consistent intrinsics.
    """
    factor = min(height, width) / min(sample.height, sample.width) * max(scale, 1.0)
    rh = max(1, round(sample.height * factor))
    rw = max(1, round(sample.width * factor))
    if (rh, rw) != (sample.height, sample.width):
        sample = resize(sample, rh, rw)

    def offset(slack: int) -> int:  # where a window with `slack` spare pixels starts
        return int(rng.integers(0, slack + 1)) if rng is not None else slack // 2

    pad_h, pad_w = max(height - rh, 0), max(width - rw, 0)
    if pad_h or pad_w:
        top, left = offset(pad_h), offset(pad_w)
        sample = pad(sample, top, pad_h - top, left, pad_w - left)
    return crop(sample, offset(sample.height - height), offset(sample.width - width), height,
                width)


def augment(
    sample: Sample,
    height: int,
    width: int,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> Sample:
    """Random zoom + crop to ``height`` x ``width``, flip and colour jitter.

    Args:
        sample: Input sample (needs intrinsics if it is to keep metric meaning).
        height: Output height [px] (use multiples of 14 for the ViT).
        width: Output width [px].
        rng: Random generator (all randomness comes from it).
        config: Settings (defaults if None).

    Returns:
        The augmented sample.
    """
    cfg = config or AugmentConfig()
    scale = float(rng.uniform(*cfg.scale_range))
    out = fit_to_size(sample, height, width, rng, scale)
    if rng.random() < cfg.flip_prob:
        out = hflip(out)
    if rng.random() < cfg.jitter_prob:
        out = replace(
            out,
            image=color_jitter(
                out.image, rng, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue
            ),
        )
    return out
