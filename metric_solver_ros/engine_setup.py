"""Engine set-up without a model: device and precision names resolved, network input sizes.

Split from ``engine.py`` (which re-exports every name here); torch is needed, the model is not.
"""

from __future__ import annotations

import logging

import torch

from metric_solver_ros.runtime_options import DEVICES, PRECISIONS, RESIZE_MODES, native_bf16

_LOG = logging.getLogger('metric_solver_ros.engine')

_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
class EngineError(ValueError):
    """A request the engine cannot serve (bad device, anchor, image or state); says why."""


class EngineOutOfMemory(EngineError):
    """The device ran out of memory for this frame; the frame is dropped, the engine is usable.

    :meth:`DepthEngine.degrade` trades resolution (then the GPU) for memory.
    """


def resolve_device(device: str) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a torch device.

    Args:
        device: The requested device.

    Returns:
        The device to use. ``auto`` falls back to the CPU, with a log line, when CUDA is missing.

    Raises:
        EngineError: If CUDA is asked for and unavailable, or the name is unknown.
    """
    name = str(device).strip().lower()
    if name == 'auto':
        if torch.cuda.is_available():
            return torch.device('cuda')
        _LOG.info('device auto: CUDA is not available, using the CPU')
        return torch.device('cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name == 'cuda' or name.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise EngineError(
                f'device {device!r} requested but CUDA is not available (torch '
                f'{torch.__version__}, built with CUDA: {torch.version.cuda or "no"}); '
                f'use device auto or cpu')
        return torch.device(name)
    raise EngineError(f'unknown device {device!r}; expected one of {", ".join(DEVICES)}')


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Pick the network dtype: ``auto`` is bf16 with :func:`native_bf16`, else fp16 / CPU fp32.

    Raises:
        EngineError: For an unknown name, or half precision on the CPU.
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise EngineError(f'unknown precision {precision!r}; expected one of '
                          f'{", ".join(PRECISIONS)}')
    if name == 'auto':
        if device.type == 'cuda':
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.float32
    if device.type == 'cpu' and name == 'fp16':
        raise EngineError('precision fp16 is not supported on the CPU; use fp32 or bf16')
    return _DTYPES[name]


def network_input_size(image_hw: tuple[int, int], short_side_px: int, patch_px: int,
                       mode: str = 'keep_aspect') -> tuple[int, int]:
    """Network input size for an image: multiples of the patch size.

    Args:
        image_hw: ``(height, width)`` of the camera image [px].
        short_side_px: Target length of the shorter side [px] (``square``: both sides).
        patch_px: The encoder's patch size [px] (14).
        mode: ``keep_aspect`` (the longer side follows the image aspect) or ``square``.

    Returns:
        ``(height, width)`` [px], each a positive multiple of ``patch_px``.
    """
    if mode not in RESIZE_MODES:
        raise EngineError(f'unknown resize mode {mode!r}; expected one of {RESIZE_MODES}')

    def snap(length: float) -> int:
        return max(patch_px, int(round(length / patch_px)) * patch_px)

    short = snap(short_side_px)
    if mode == 'square':
        return short, short
    height, width = image_hw
    scale = short / min(height, width)
    if height <= width:
        return short, snap(width * scale)
    return snap(height * scale), short
