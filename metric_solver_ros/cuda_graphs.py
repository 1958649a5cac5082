"""CUDA graphs for the engine: a stage captured once per input signature, then replayed."""

from __future__ import annotations

import logging

import torch

_LOG = logging.getLogger(__name__)

#: Most CUDA graphs one engine keeps (one per input signature; beyond it, calls run eagerly).
MAX_CUDA_GRAPHS = 8
#: What running out of device memory raises (torch < 2.5 has only the CUDA one).
OOM_ERRORS = (getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError),)


class CudaGraphs:
    """Captures a function of tensors as CUDA graphs, one per input signature, and replays them.

    The first :meth:`run` with a new signature (a key plus the inputs' shapes and dtypes) warms
    the function up on a side stream, captures it into a graph with static input buffers, and
    keeps it; every later run copies the inputs into those buffers and replays the graph. Batch-1
    inference is bound by kernel launches on GPUs; a replay launches the whole stage at once.

    The returned outputs are the graph's static tensors: the next replay of the same graph
    overwrites them, so callers consume or copy them first. Past ``max_graphs`` signatures, new
    ones run eagerly. A capture that fails (an operation CUDA graphs cannot hold) sets
    :attr:`error`, is logged once, and the caller should run eagerly from then on; running out of
    memory is raised as usual.

    Args:
        max_graphs: Most graphs kept (each holds its own memory pool).
    """

    def __init__(self, max_graphs: int = MAX_CUDA_GRAPHS) -> None:
        self.max_graphs = max_graphs
        self.error: str | None = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple, object]] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Drop every graph (and its memory pool)."""
        self._graphs.clear()

    def run(self, key: tuple, fn, inputs: tuple[torch.Tensor, ...]):
        """Return ``fn(*inputs)``, from a replayed graph where possible."""
        signature = (key, tuple((tuple(t.shape), t.dtype, t.device) for t in inputs))
        entry = self._graphs.get(signature)
        if entry is None:
            if self.error is not None or len(self._graphs) >= self.max_graphs:
                return fn(*inputs)
            entry = self._capture(fn, inputs)
            if entry is None:
                return fn(*inputs)
            self._graphs[signature] = entry
        graph, static_inputs, static_outputs = entry
        for buffer, value in zip(static_inputs, inputs, strict=True):
            buffer.copy_(value)
        graph.replay()
        return static_outputs

    def _capture(self, fn, inputs: tuple[torch.Tensor, ...]):
        static_inputs = tuple(t.clone() for t in inputs)
        device = static_inputs[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(side):  # lazy initialisation and kernel choices, not captured
                for _ in range(2):
                    fn(*static_inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_outputs = fn(*static_inputs)
        except OOM_ERRORS:
            raise
        except RuntimeError as exc:
            self.error = str(exc).splitlines()[0][:200]
            _LOG.warning('CUDA graph capture failed, running eagerly from now on: %s', self.error)
            return None
        return graph, static_inputs, static_outputs
