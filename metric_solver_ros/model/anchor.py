"""The anchor pool: learned embeddings of anchor depths, log-linear in between (paper Sec. 3.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

_RANGE_RTOL = 1e-6  # anchors this close (relative) outside the pool ends count as the ends


def _is_compiling() -> bool:
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):
        return bool(compiler.is_compiling())
    return False


class AnchorPool(nn.Module):
    """N learnable anchor embeddings; any anchor inside the pool range gets an embedding.

    At a pool anchor the embedding is exactly that anchor's; between two neighbours it is their
    linear interpolation in ``log(a)``. Anchors outside ``[anchors_m[0], anchors_m[-1]]`` (or NaN,
    inf, <= 0) are rejected with ``ValueError``.

    The ``anchors_m`` buffer stays float32 when the module is cast to another dtype (a bf16 pool
    would shift anchors such as 0.3 m); the embeddings follow the module's dtype.

    Args:
        anchors_m: Pool anchor depths [m], strictly increasing, > 0.
        dim: Embedding channels.
    """

    def __init__(self, anchors_m: Sequence[float], dim: int) -> None:
        super().__init__()
        values = [float(a) for a in anchors_m]
        if not values or not all(math.isfinite(a) and a > 0 for a in values) or any(
                b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f'anchor pool must be finite, > 0 and strictly increasing [m], '
                             f'got {values}')
        if dim < 1:
            raise ValueError(f'anchor embedding dim must be >= 1, got {dim}')
        self.pool_values_m: tuple[float, ...] = tuple(values)
        self.dim = int(dim)
        # Not saved: the pool values live in the config (one place), which checkpoints carry.
        self.register_buffer('anchors_m', torch.tensor(values, dtype=torch.float32),
                             persistent=False)
        self.embeddings = nn.Parameter(torch.empty(len(values), dim))
        if not self.embeddings.is_meta:
            nn.init.normal_(self.embeddings, std=0.02)

    def _apply(self, fn, *args, **kwargs):  # noqa: D102 (keep the pool in float32)
        result = super()._apply(fn, *args, **kwargs)
        if self.anchors_m.dtype != torch.float32:
            self.anchors_m = torch.tensor(self.pool_values_m, dtype=torch.float32,
                                          device=self.anchors_m.device)
        return result

    def range_error(self, value: float) -> ValueError:
        """Return the error raised for the out-of-range anchor ``value`` [m]."""
        lo, hi = self.pool_values_m[0], self.pool_values_m[-1]
        pool = ', '.join(f'{a:g}' for a in self.pool_values_m)
        return ValueError(f'anchor {value!r} m is outside the anchor pool range '
                          f'[{lo:g}, {hi:g}] m (pool: {pool} m)')

    def validate(self, values: Sequence[float]) -> None:
        """Raise ``ValueError`` for any anchor [m] outside the pool range (host-side, no sync).

        Args:
            values: Anchor depths [m] as Python floats.
        """
        lo, hi = self.pool_values_m[0], self.pool_values_m[-1]
        for value in values:
            v = float(value)
            if not (math.isfinite(v) and v > 0
                    and lo * (1 - _RANGE_RTOL) <= v <= hi * (1 + _RANGE_RTOL)):
                raise self.range_error(v)

    def forward(self, anchors_m: Tensor, *, check: bool = True) -> Tensor:
        """Return the embedding of each anchor.

        Args:
            anchors_m: Anchor depths [m], shape [B].
            check: Validate the range on the host (a device sync on GPUs); skipped while
                compiling. Callers that validated with :meth:`validate` may pass False.

        Returns:
            Embeddings [B, dim] in the embeddings' dtype.

        Raises:
            ValueError: An anchor is NaN, inf, <= 0 or outside the pool range.
        """
        anchors = anchors_m.reshape(-1)
        if check and not _is_compiling():
            self.validate(anchors.detach().float().cpu().tolist())
        pool = self.anchors_m.float()
        lo_val, hi_val = pool[0], pool[-1]
        a = anchors.to(device=pool.device, dtype=torch.float32).clamp(lo_val, hi_val)
        if pool.numel() == 1:
            return self.embeddings[:1].expand(a.numel(), -1)
        log_pool = torch.log(pool)
        log_a = torch.log(a)
        # searchsorted (left) as a count of smaller pool values: the same index, and exportable
        # to ONNX (searchsorted has no ONNX function); the pool holds a handful of values.
        hi = (log_pool.unsqueeze(0) < log_a.unsqueeze(1)).sum(1).clamp(1, pool.numel() - 1)
        lo = hi - 1
        t = (log_a - log_pool[lo]) / (log_pool[hi] - log_pool[lo])
        t = t.unsqueeze(1)
        emb = self.embeddings.float()
        out = (1 - t) * emb[lo] + t * emb[hi]
        return out.to(self.embeddings.dtype)
