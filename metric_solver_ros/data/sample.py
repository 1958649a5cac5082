"""The ``Sample`` type shared by every dataset: one RGB image with metric planar depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """One RGB image with registered metric depth.

    Attributes:
        image: HxWx3 uint8 RGB.
        depth_m: HxW float32 planar depth (camera z) [m]; 0 or NaN = invalid; +inf = sky /
            infinitely far.
        intrinsics: (fx, fy, cx, cy) [px] at this resolution (pixel centres at integer
            coordinates, OpenCV convention), or None when unknown.
        name: Identifier of the frame (file stem, ``'synthetic/indoor/42'``, ...).
        scene: ``'indoor'``, ``'outdoor'`` or ``''`` (unknown).
    """

    image: np.ndarray
    depth_m: np.ndarray
    intrinsics: tuple[float, float, float, float] | None
    name: str = ''
    scene: str = ''

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f'image must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}'
            )
        if self.depth_m.shape != self.image.shape[:2]:
            raise ValueError(
                f'depth_m shape {self.depth_m.shape} != image shape {self.image.shape[:2]}'
            )
        if self.depth_m.dtype != np.float32:
            self.depth_m = self.depth_m.astype(np.float32)
        if self.intrinsics is not None:
            if len(self.intrinsics) != 4:
                raise ValueError(f'intrinsics must be (fx, fy, cx, cy), got {self.intrinsics}')
            self.intrinsics = tuple(float(x) for x in self.intrinsics)  # type: ignore[assignment]
        if self.scene not in ('indoor', 'outdoor', ''):
            raise ValueError(f"scene must be 'indoor', 'outdoor' or '', got {self.scene!r}")

    @property
    def height(self) -> int:
        """Image height [px]."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width [px]."""
        return int(self.image.shape[1])

    def valid_mask(self) -> np.ndarray:
        """Pixels with usable depth: finite positive values and +inf (sky)."""
        d = self.depth_m
        return (d > 0) & ~np.isnan(d)
