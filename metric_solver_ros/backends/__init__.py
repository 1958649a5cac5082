"""Runtimes for the network beyond eager PyTorch: the backend names and their availability.

Torch-light (no torch import): the node's parameter table and the command line read these names.

- ``torch``: the model as PyTorch modules (eager, ``torch.compile`` or CUDA graphs);
- ``openvino``: the ONNX export (:mod:`.onnx_export`) compiled by OpenVINO: the CPU, or an Intel
  GPU where OpenVINO lists one;
- ``onnxruntime``: the ONNX export run by ONNX Runtime: its CPU provider, or CUDA / TensorRT
  providers where the installed build has them (``onnxruntime-gpu``, Jetson builds);
- ``auto``: torch on CUDA; on the CPU, OpenVINO when it is installed and measured faster than
  torch on the first frame (:mod:`.graph`), else torch.

The ONNX runtimes are optional at run time: asking for one that does not import raises
:class:`BackendError` naming the package to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS: tuple[str, ...] = ('auto', 'torch', 'openvino', 'onnxruntime')
#: The backends that run the exported ONNX graphs (module name = pip package name).
GRAPH_BACKENDS: tuple[str, ...] = ('openvino', 'onnxruntime')


class BackendError(ValueError):
    """A backend that cannot serve: unknown, not installed, or without the asked-for device."""


def check_backend(name: str) -> str:
    """Return the normalised backend name.

    Raises:
        BackendError: If ``name`` is not one of :data:`BACKENDS`.
    """
    value = str(name).strip().lower()
    if value not in BACKENDS:
        raise BackendError(f'unknown backend {name!r}; expected one of {", ".join(BACKENDS)}')
    return value


def import_runtime(name: str) -> ModuleType:
    """Import the Python package of a graph backend (``openvino`` or ``onnxruntime``).

    Raises:
        BackendError: If the package does not import; the message says what to install.
    """
    if name not in GRAPH_BACKENDS:
        raise BackendError(f'{name!r} is not an ONNX runtime; expected one of '
                           f'{", ".join(GRAPH_BACKENDS)}')
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendError(
            f'backend {name} requested but the {name} package cannot be imported ({exc}); '
            f'install it (pip install {name}, the pinned version is in requirements.txt) or '
            f'use backend torch') from None


def runtime_available(name: str) -> bool:
    """Whether the package of graph backend ``name`` imports."""
    try:
        import_runtime(name)
    except BackendError:
        return False
    return True
