"""Names of the device, precision and resize options, and the bf16 hardware rule: one home.

Torch-light: torch is imported inside :func:`native_bf16` only, so the node's parameter table
(``parameters.py``) and the training config read these names without loading torch. The engine
(``engine.py``) resolves them into torch devices and dtypes; training asks :func:`native_bf16`
whether ``amp: auto`` means bf16.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ('auto', 'cpu', 'cuda')
"""Device names (plus ``cuda:N``) of the engine and the node's ``device`` parameter."""
PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16')
"""Network precisions of the engine and the node's ``precision`` parameter."""
RESIZE_MODES = ('keep_aspect', 'square')
"""How the engine sizes the network input: ``keep_aspect`` (short side) or ``square``."""
MULTI_ANCHOR_RESOLUTIONS = ('full', 'half')
"""Resolution of the heads' finest stages when several anchors are decoded (engine, node)."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA compute capability 8 (Ampere) on.

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (slowly: V100,
    T4, Jetson Xavier), and asks about the current device instead of ``device``.
    """
    if device.type != 'cuda':
        return False
    import torch  # a CUDA device means torch is loaded already

    return torch.cuda.get_device_capability(device)[0] >= 8
