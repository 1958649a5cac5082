"""A frame's finished outputs on the device, and their trip to the host.

The engine's last steps, as tensor functions that run the same on CUDA and on the CPU:

- :func:`back_project`: organised camera-frame points from depth and pinhole intrinsics;
- :func:`pack_points`: those points (and colours) in the ``sensor_msgs/PointCloud2`` byte layout
  of :func:`~metric_solver_ros.conversions.cloud_dtype` (x, y, z float32 [m], rgb as PCL's packed
  float), so the node publishes the bytes as they arrive, with no host-side packing;
- :func:`depth_statistics`: ``depth_info``'s statistics of each depth map, where they live (a
  sort on a GPU is ~0.1 ms; the host's ``np.median`` of a 640x480 image is a few ms);
- :class:`HostCopy`: every output of a frame to the host in ONE device-to-host copy, through a
  pinned staging buffer on CUDA (page-locked memory copies asynchronously at full bus speed;
  several small copies each pay a synchronisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: Byte alignment of each output inside the staging buffer (any dtype's view stays aligned).
_ALIGN_BYTES = 16


@dataclass(frozen=True)
class PointsRequest:
    """What back-projection to do alongside a frame.

    Attributes:
        intrinsics: ``(fx, fy, cx, cy)`` [px] at the input image resolution.
        stride: Keep every ``stride``-th pixel in both directions (organised cloud).
        max_range_m: Points farther than this [m] (Euclidean) become NaN; inf keeps all finite.
        with_rgb: Also return the colour of each point.
    """

    intrinsics: tuple[float, float, float, float]
    stride: int = 1
    max_range_m: float = math.inf
    with_rgb: bool = False


def back_project(depth_m: torch.Tensor, image: torch.Tensor,
                 intrinsics: tuple[float | torch.Tensor, ...], stride: int = 1,
                 max_range_m: float | torch.Tensor = math.inf, with_rgb: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Organised camera-frame points [m] from depth and pinhole intrinsics, where depth lives.

    Args:
        depth_m: float32 [H, W] depth [m] (+inf / NaN: no point).
        image: uint8 [1, 3, H, W] RGB image (point colours).
        intrinsics: ``(fx, fy, cx, cy)`` [px], numbers or 0-d tensors (a CUDA graph takes
            tensors, so that one graph serves any camera).
        stride: Keep every ``stride``-th pixel in both directions.
        max_range_m: Points farther than this [m] become NaN (a number or a 0-d tensor).
        with_rgb: Also return the colours.

    Returns:
        ``(xyz [h, w, 3] float32 [m] with NaN for no point, rgb [h, w, 3] uint8 or None)``.
    """
    fx, fy, cx, cy = intrinsics
    stride = max(1, int(stride))
    height, width = depth_m.shape
    v = torch.arange(0, height, stride, device=depth_m.device, dtype=torch.float32)
    u = torch.arange(0, width, stride, device=depth_m.device, dtype=torch.float32)
    z = depth_m[::stride, ::stride]
    x = (u.view(1, -1) - cx) / fx * z
    y = (v.view(-1, 1) - cy) / fy * z
    xyz = torch.stack([x, y, z], dim=-1)
    invalid = ~torch.isfinite(z)
    if isinstance(max_range_m, torch.Tensor) or math.isfinite(max_range_m):
        invalid |= xyz.norm(dim=-1) > max_range_m
    xyz = xyz.masked_fill(invalid.unsqueeze(-1), torch.nan)
    rgb = image[0, :, ::stride, ::stride].permute(1, 2, 0) if with_rgb else None
    return xyz, rgb


def pack_points(xyz_m: torch.Tensor, rgb: torch.Tensor | None) -> torch.Tensor:
    """Points in the PointCloud2 layout of ``conversions.cloud_dtype``, as float32 [h, w, F].

    Args:
        xyz_m: float32 [h, w, 3] points [m].
        rgb: uint8 [h, w, 3] colours, or None.

    Returns:
        Contiguous float32 [h, w, 3] (x, y, z), or [h, w, 4] with the colour as PCL's packed
        float (the bits of the little-endian uint32 ``0x00RRGGBB``). Its bytes are the
        ``data`` of the message; ``F * 4`` is its ``point_step``.
    """
    if rgb is None:
        return xyz_m.contiguous()
    colour = rgb.to(torch.int32)
    packed = (colour[..., 0] << 16) | (colour[..., 1] << 8) | colour[..., 2]
    return torch.cat([xyz_m, packed.view(torch.float32).unsqueeze(-1)], dim=-1)


def depth_statistics(depth_m: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """``messages.depth_statistics`` of each map, as tensors (no host sync: graph-capturable).

    Args:
        depth_m: float32 [N, H, W] depth [m] (NaN undefined, +inf beyond the far limit).
        near: bool [N, H, W] near masks.

    Returns:
        float32 [N, 5]: near fraction and +inf fraction of the defined pixels; min, median (the
        mean of the two middle values for an even count, as ``np.median``) and max of the
        finite depths [m], NaN when there are none.
    """
    flat = depth_m.reshape(depth_m.shape[0], -1)
    defined = ~torch.isnan(flat)
    finite = torch.isfinite(flat)
    n_defined = defined.sum(dim=1).clamp(min=1).float()
    near_fraction = (near.reshape(flat.shape) & defined).sum(dim=1).float() / n_defined
    far_fraction = torch.isposinf(flat).sum(dim=1).float() / n_defined
    ordered = torch.sort(torch.where(finite, flat, torch.inf), dim=1).values
    count = finite.sum(dim=1, keepdim=True)
    last = (count - 1).clamp(min=0)
    low = torch.gather(ordered, 1, last // 2)
    high = torch.gather(ordered, 1, torch.minimum(count // 2, last))
    median = torch.where(count % 2 == 1, low, 0.5 * (low + high))[:, 0]
    lowest, highest = ordered[:, 0], torch.gather(ordered, 1, last)[:, 0]
    stats = torch.stack([near_fraction, far_fraction, lowest, median, highest], dim=1)
    # min, median and max are NaN without a finite depth (a mask made on the device: no
    # host-to-device copy, which a CUDA graph could not hold)
    depth_columns = torch.arange(5, device=flat.device) >= 2
    none = (count[:, 0] == 0).unsqueeze(1) & depth_columns
    return stats.masked_fill(none, torch.nan)


class HostCopy:
    """Brings a frame's output tensors to the host as numpy arrays, in one copy.

    The tensors are laid end to end (each aligned to 16 bytes) in one device buffer, copied with
    one transfer into a pinned host buffer (torch's caching host allocator recycles it once no
    array from it is alive, so a result still being published is never overwritten), and handed
    out as numpy views of that buffer.

    Args:
        staged: Stage through one buffer (one copy); None: only on CUDA. On the CPU the tensors
            are already host memory and are returned as they are (no copy).
    """

    def __init__(self, staged: bool | None = None) -> None:
        self.staged = staged

    def __call__(self, tensors: dict[str, torch.Tensor | None]) -> dict[str, np.ndarray | None]:
        """Return ``{name: numpy array or None}`` for ``{name: tensor or None}``."""
        present = {k: t for k, t in tensors.items() if t is not None}
        out: dict[str, np.ndarray | None] = {k: None for k in tensors}
        if not present:
            return out
        device = next(iter(present.values())).device
        staged = self.staged if self.staged is not None else device.type == 'cuda'
        if not staged:
            out.update({k: t.cpu().numpy() for k, t in present.items()})
            return out
        chunks, layout, offset = [], [], 0
        for name, tensor in present.items():
            flat = tensor.contiguous().reshape(-1).view(torch.uint8)
            pad = -flat.numel() % _ALIGN_BYTES
            chunks.append(flat)
            if pad:
                chunks.append(flat.new_zeros(pad))
            layout.append((name, offset, tensor.shape, tensor.dtype))
            offset += flat.numel() + pad
        device_buffer = torch.cat(chunks)
        pinned = device.type == 'cuda'
        host = torch.empty(offset, dtype=torch.uint8, pin_memory=pinned)
        host.copy_(device_buffer, non_blocking=pinned)
        if pinned:
            torch.cuda.current_stream(device).synchronize()
        raw = host.numpy()
        for name, start, shape, dtype in layout:
            itemsize = torch.empty((), dtype=dtype).element_size()
            count = math.prod(shape)
            view = raw[start:start + count * itemsize].view(_NUMPY_DTYPES[dtype])
            out[name] = view.reshape(tuple(shape))
        return out


_NUMPY_DTYPES = {torch.float32: np.float32, torch.bool: np.bool_, torch.int8: np.int8,
                 torch.uint8: np.uint8, torch.int32: np.int32, torch.float64: np.float64}
