"""The network's ONNX export run by OpenVINO or ONNX Runtime, behind the engine's seam.

:class:`GraphBackend` offers what :class:`~metric_solver_ros.engine.DepthEngine` asks of the
network: ``encode(x)`` -> features (``(tokens, cls)`` pairs per tap) and ``decode(features,
anchors_m, patch_hw)`` -> logits, both as torch tensors on the engine's device, so resizing,
decoding to metres, fusion, the feature cache and the point cloud stay the engine's own code.
Graphs are exported per network input size on first use (:func:`.onnx_export.find_or_export`,
cached on disk) and compiled once per size.

Thread settings are chosen to share the CPU with other processes: a fixed thread count, no
pinning of threads to cores (OpenVINO), no spinning of idle workers (ONNX Runtime).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import pathlib
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metric_solver_ros.backends import BackendError, import_runtime
from metric_solver_ros.backends.onnx_export import (
    DECODER_FILE,
    ENCODER_FILE,
    default_cache_dir,
    find_or_export,
    logit_names,
    weights_sha256,
)
from metric_solver_ros.model import MetricSolver

_LOG = logging.getLogger(__name__)

#: Network input sizes whose compiled graphs one backend keeps (a camera rarely changes size).
MAX_SIZES = 4
#: ONNX Runtime providers tried, best first, for a CUDA device (those installed are used).
ORT_CUDA_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


class _OpenVinoGraph:
    """One ONNX graph compiled by OpenVINO, run through one infer request."""

    def __init__(self, path: pathlib.Path, device: str, properties: dict[str, Any]) -> None:
        self._compiled = openvino_core().compile_model(str(path), device, properties)
        self._request = self._compiled.create_infer_request()
        self._outputs = [port.get_any_name() for port in self._compiled.outputs]
        # What the CPU runs: the bf16 hint falls back to f32 without bf16 instructions.
        self.precision = self._compiled.get_property('INFERENCE_PRECISION_HINT').to_string()
        self.threads = int(self._compiled.get_property('INFERENCE_NUM_THREADS'))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # share_inputs: no copy of the tokens; outputs are copied (the cache outlives a request)
        result = self._request.infer(feeds, share_inputs=True)
        return {name: result[name] for name in self._outputs}


class _OrtGraph:
    """One ONNX graph in an ONNX Runtime session."""

    def __init__(self, path: pathlib.Path, providers: Sequence[Any], options: Any) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(path), options, providers=list(providers))
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.precision = 'f32'
        self.threads = int(self._session.get_session_options().intra_op_num_threads)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))


class _FasterOfTwo:
    """An encoder compiled with all its threads and with one, running one thread when it can.

    On a computer whose cores other processes keep busy, OpenVINO's threads lose more to
    waiting for each other than a second thread gains (2-core machine beside two busy loops:
    6.8 frames/s with a one-thread encoder against 3.5-3.6 with two; alone 2 threads win,
    benchmarks/RESULTS.md). So now and then the other variant runs :data:`EXPLORE_FRAMES`
    frames and the medians of the variants' recent encoder times are compared: all threads
    run only while they are clearly faster (:data:`MANY_BELOW`), and one thread takes over
    when it is about as fast (:data:`ONE_BELOW`); the gap between the two bounds keeps noise
    from flipping the choice. Leaning to one thread: beside a busy process both variants' times
    jump with where the scheduler puts the threads, a look often finds them level, and the
    one-thread engine came out ahead there (beside a PyTorch process 6.5-6.7 frames/s, where
    the symmetric rule kept two threads and ran 3.6-4.8; RESULTS.md "Session 11").
    The first look comes after :data:`FIRST_LOOK` frames; each look that confirms the choice
    doubles the interval (at most :data:`LAST_LOOK` frames), a switch resets it. The one-thread
    graph is compiled in a background thread (no stall of the stream); both variants compute
    the same features, only the time differs.
    """

    FIRST_LOOK = 50
    LAST_LOOK = 800
    EXPLORE_FRAMES = 6  # the first one is not timed (a variant's first run after a pause is slow)
    WINDOW = 9
    #: All threads take over when their median is below this share of one thread's.
    MANY_BELOW = 0.9
    #: One thread takes over when its median is below this multiple of all threads'.
    ONE_BELOW = 1.05

    def __init__(self, make: Callable[[int | None], Any], threads: int) -> None:
        self._threads = threads
        self._graphs: dict[int, Any] = {threads: make(None)}
        self._lean: concurrent.futures.Future | None = None
        self._make = make
        self._times: dict[int, deque[float]] = {threads: deque(maxlen=self.WINDOW),
                                                 1: deque(maxlen=self.WINDOW)}
        self._current = threads
        self._interval = self.FIRST_LOOK
        self._next_look = self.FIRST_LOOK
        self._frames = 0
        self._explore_left = 0
        self.precision = self._graphs[threads].precision

    @property
    def threads(self) -> int:
        """The thread count of the variant that runs now."""
        return self._current

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._frames += 1
        other = 1 if self._current == self._threads else self._threads
        if not self._explore_left and self._frames >= self._next_look and self._ready(other):
            self._explore_left = self.EXPLORE_FRAMES
            self._times[other].clear()  # its median from fresh frames only
        variant = other if self._explore_left else self._current
        start = time.perf_counter()
        outputs = self._graphs[variant].run(feeds)
        elapsed = time.perf_counter() - start
        if self._explore_left:
            if self._explore_left < self.EXPLORE_FRAMES:
                self._times[variant].append(elapsed)
            self._explore_left -= 1
            if not self._explore_left:
                self._choose()
        else:
            self._times[variant].append(elapsed)
        return outputs

    def _ready(self, threads: int) -> bool:
        """Whether that variant is compiled; starts compiling the one-thread graph if not."""
        if threads in self._graphs:
            return True
        if self._lean is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='encoder-compile')
            self._lean = pool.submit(self._make, 1)
            pool.shutdown(wait=False)  # its thread ends with the compile
        if not self._lean.done():
            return False
        try:
            self._graphs[1] = self._lean.result()
        except Exception as exc:  # noqa: BLE001 - keep the variant that works
            _LOG.warning('one-thread encoder unavailable (%s): keeping %d threads', exc,
                         self._threads)
            self._next_look = math.inf
            return False
        # the compile slowed the recent frames: compare with fresh ones
        self._times[self._current].clear()
        self._next_look = self._frames + self.WINDOW
        return False

    def _choose(self) -> None:
        many = statistics.median(self._times[self._threads])
        one = statistics.median(self._times[1])
        if self._current == 1:
            best = self._threads if many < self.MANY_BELOW * one else 1
        else:
            best = 1 if one < self.ONE_BELOW * many else self._threads
        if best != self._current:
            _LOG.info('encoder threads %d -> %d (median %.1f ms with %d, %.1f ms with 1, over '
                      'recent frames)', self._current, best, many * 1e3, self._threads,
                      one * 1e3)
            self._current = best
            self._interval = self.FIRST_LOOK
        else:
            self._interval = min(2 * self._interval, self.LAST_LOOK)
        self._next_look = self._frames + self._interval


_CORE = None


def openvino_core():
    """The process's OpenVINO ``Core`` (one: it loads the device plugins)."""
    global _CORE
    if _CORE is None:
        _CORE = import_runtime('openvino').Core()
    return _CORE


def openvino_properties(device: str, precision: str = 'fp32',
                        num_threads: int | None = None) -> dict[str, Any]:
    """What the backend compiles its graphs with on an OpenVINO device.

    Args:
        device: ``CPU`` or ``GPU``.
        precision: ``fp32`` or ``bf16`` (the bf16 hint; float32 where the CPU lacks bf16).
        num_threads: The CPU's inference threads (None or 0: OpenVINO's choice).
    """
    properties: dict[str, Any] = {
        'PERFORMANCE_HINT': 'LATENCY',
        'INFERENCE_PRECISION_HINT': 'bf16' if precision == 'bf16' else 'f32',
    }
    if device == 'CPU':
        properties['NUM_STREAMS'] = 1
        # Unpinned: a thread pinned to a core another process is busy on cannot move.
        properties['ENABLE_CPU_PINNING'] = False
        if num_threads:
            properties['INFERENCE_NUM_THREADS'] = int(num_threads)
    return properties


class GraphBackend:
    """A Metric-Solver model run from its ONNX export by OpenVINO or ONNX Runtime.

    Args:
        model: The network (exported from a float32 CPU copy; not modified).
        runtime: ``openvino`` or ``onnxruntime``.
        device: The engine's torch device; outputs are returned there. ONNX Runtime runs on the
            CPU for ``cpu`` and with its TensorRT / CUDA providers for ``cuda``; OpenVINO runs on
            ``openvino_device`` (CUDA is not one).
        precision: ``fp32``, ``bf16`` (OpenVINO's bf16 inference hint, used where the CPU has
            bf16 instructions) or ``fp16`` (ONNX Runtime's TensorRT provider only).
        num_threads: Threads of the runtime on the CPU (None: the runtime's default).
        cache_dir: Where exports are kept (None: ``~/.cache/metric_solver_ros/onnx``).
        openvino_device: ``CPU``, ``GPU`` (an Intel GPU) or ``auto`` (``GPU`` when OpenVINO
            lists one, else ``CPU``); ``CPU`` asks for a ``cpu`` torch device.
        providers: ONNX Runtime providers to use instead of the default choice (names or
            ``(name, options)`` pairs).
        adaptive_threads: OpenVINO on the CPU with ``num_threads`` > 1: also compile the encoder
            with one thread and run it unless all threads are clearly faster now
            (:class:`_FasterOfTwo`).

    Raises:
        BackendError: The runtime is not installed, or cannot serve the device / providers.
    """

    def __init__(self, model: MetricSolver, runtime: str, device: torch.device,
                 precision: str = 'fp32', num_threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, openvino_device: str = 'CPU',
                 providers: Sequence[Any] | None = None,
                 adaptive_threads: bool = False) -> None:
        self.runtime = runtime
        self._adaptive = adaptive_threads and runtime == 'openvino' and (num_threads or 0) > 1
        self._module = import_runtime(runtime)
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.num_threads = num_threads
        self.cache_dir = cache_dir
        self._digest = weights_sha256(model)
        self._names = logit_names(model)
        self._taps = len(model.config.taps)
        self._graphs: OrderedDict[tuple[int, int], tuple[Any, Any]] = OrderedDict()
        if runtime == 'openvino':
            self._make = self._openvino_factory(openvino_device)
        else:
            self._make = self._ort_factory(providers)

    # ------------------------------------------------------------------------ runtimes

    def _openvino_factory(self, openvino_device: str) -> Callable[..., Any]:
        if self.device.type != 'cpu' and str(openvino_device).upper() == 'CPU':
            raise BackendError(f'backend openvino runs on the CPU or an Intel GPU, not on '
                               f'{self.device}; use device cpu or auto, or backend torch / '
                               f'onnxruntime')
        if self.precision == 'fp16':
            raise BackendError('precision fp16 is not offered by backend openvino on the CPU; '
                               'use fp32 or bf16')
        available = openvino_core().available_devices
        name = str(openvino_device).upper()
        if name == 'AUTO':
            name = 'GPU' if any(d.startswith('GPU') for d in available) else 'CPU'
        if not any(d == name or d.startswith(name + '.') for d in available):
            raise BackendError(f'OpenVINO device {name} is not available here (available: '
                               f'{", ".join(available)})')
        properties = openvino_properties(name, self.precision, self.num_threads)
        self.target = f'openvino {self._module.__version__.split("-")[0]} {name}'

        def make(path: pathlib.Path, threads: int | None = None) -> _OpenVinoGraph:
            extra = {'INFERENCE_NUM_THREADS': threads} if threads else {}
            return _OpenVinoGraph(path, name, {**properties, **extra})

        self._adaptive = self._adaptive and name == 'CPU'
        return make

    def _ort_factory(self, providers: Sequence[Any] | None) -> Callable[..., Any]:
        ort = self._module
        available = ort.get_available_providers()
        if providers is None:
            if self.device.type == 'cuda':
                providers = [p for p in ORT_CUDA_PROVIDERS if p in available]
                if not providers:
                    raise BackendError(
                        f'backend onnxruntime on {self.device}: this onnxruntime build has no '
                        f'CUDA or TensorRT provider (available: {", ".join(available)}); '
                        f'install onnxruntime-gpu (a Jetson build on Jetson) or use device cpu')
                providers = [self._tensorrt_options(p) for p in providers]
                providers.append('CPUExecutionProvider')
            else:
                if self.precision != 'fp32':
                    raise BackendError(f'backend onnxruntime runs fp32 on the CPU, not '
                                       f'{self.precision}')
                providers = ['CPUExecutionProvider']
        for provider in providers:
            name = provider[0] if isinstance(provider, tuple) else provider
            if name not in available:
                raise BackendError(f'onnxruntime provider {name} is not available here '
                                   f'(available: {", ".join(available)})')
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if self.num_threads:
            options.intra_op_num_threads = int(self.num_threads)
        # Idle workers sleep instead of spinning: spinning burns the cores other nodes need.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        options.log_severity_level = 3
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.target = f'onnxruntime {ort.__version__} {"+".join(names)}'
        return lambda path, threads=None: _OrtGraph(path, providers, options)

    def _tensorrt_options(self, provider: str) -> Any:
        if provider != 'TensorrtExecutionProvider':
            return provider
        cache = pathlib.Path(self.cache_dir or default_cache_dir()) / 'tensorrt'
        return (provider, {'trt_fp16_enable': self.precision in ('fp16', 'bf16'),
                           'trt_engine_cache_enable': True,
                           'trt_engine_cache_path': str(cache)})

    # ------------------------------------------------------------------------ the seam

    def describe(self) -> str:
        """Runtime, device, and the precision and threads the runtime reports (0: its default).

        Before the first frame (nothing compiled yet) the requested settings are shown.
        """
        graphs = [g for pair in self._graphs.values() for g in pair]
        precision = '/'.join(sorted({g.precision for g in graphs})) or self.precision
        threads = sorted({g.threads for g in graphs}) or [self.num_threads or 0]
        return f'{self.target} {precision}, threads {"/".join(map(str, threads))}'

    def graphs(self, input_hw: tuple[int, int]) -> tuple[Any, Any]:
        """The compiled (encoder, decoder) for a network input size, exported when missing."""
        key = (int(input_hw[0]), int(input_hw[1]))
        pair = self._graphs.get(key)
        if pair is None:
            export_dir = find_or_export(self.model, self.cache_dir, key, self._digest)
            encoder_path = export_dir / ENCODER_FILE
            if self._adaptive:
                encoder = _FasterOfTwo(lambda threads: self._make(encoder_path, threads),
                                       int(self.num_threads))
            else:
                encoder = self._make(encoder_path)
            pair = (encoder, self._make(export_dir / DECODER_FILE))
            self._graphs[key] = pair
            while len(self._graphs) > MAX_SIZES:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return pair

    def encode(self, x: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
        """Run the encoder graph on normalised images [B, 3, H, W] (one run per image).

        Returns:
            Per tap ``(patch_tokens [B, N, D], class_token [B, D])`` float32 on the device.
        """
        encoder, _ = self.graphs(tuple(x.shape[-2:]))
        images = x.detach().float().cpu().numpy()
        runs = [encoder.run({'image': images[i:i + 1]}) for i in range(images.shape[0])]
        pairs = []
        for tap in range(self._taps):
            tokens = np.concatenate([r[f'tokens_{tap}'] for r in runs])
            cls = np.concatenate([r[f'cls_{tap}'] for r in runs])
            pairs.append((self._to_device(tokens), self._to_device(cls)))
        return tuple(pairs)

    def decode(self, features: Sequence[tuple[Tensor, Tensor]], anchors_m: Tensor,
               patch_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Decode every anchor for every encoded image, one decoder run per image.

        Args:
            features: Output of :meth:`encode` for ``F`` images (2 with flip TTA).
            anchors_m: The ``A`` anchors [m] (validated by the caller).
            patch_hw: Token grid of the encoded images.

        Returns:
            Logits [F * A, 1, h, w] per name, image-major (all anchors of image 0 first), as the
            torch path's ``repeat_interleave`` / ``repeat`` batch.
        """
        patch = self.model.config.patch_size
        _, decoder = self.graphs((patch_hw[0] * patch, patch_hw[1] * patch))
        anchors = anchors_m.detach().float().reshape(-1).cpu().numpy()
        tokens = [t.detach().float().cpu().numpy() for t, _ in features]
        runs = []
        for image in range(tokens[0].shape[0]):
            feeds = {f'tokens_{tap}': tokens[tap][image:image + 1] for tap in range(self._taps)}
            feeds['anchors_m'] = anchors
            runs.append(decoder.run(feeds))
        return {name: self._to_device(np.concatenate([r[name] for r in runs]))
                for name in self._names}

    def _to_device(self, array: np.ndarray) -> Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor if self.device.type == 'cpu' else tensor.to(self.device)


_PRECISION_NAMES = {torch.float32: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}


def open_runtime(backend: str, model: MetricSolver, device: torch.device, dtype: torch.dtype,
                 num_threads: int | None = None, cache_dir: str | os.PathLike | None = None,
                 requested_device: str = 'cpu',
                 adaptive_threads: bool = False) -> tuple[GraphBackend | None, str]:
    """The ONNX runtime a backend name asks for, or its ``auto`` candidate.

    Args:
        backend: A checked name of ``BACKENDS``.
        model: The network.
        device: The engine's device.
        dtype: The engine's network precision (the runtime's precision hint).
        num_threads: CPU threads (None: the runtime's default).
        cache_dir: Where exports are kept.
        requested_device: The device setting (``auto``, ``cpu``, ``cuda``...): OpenVINO runs on
            the CPU for ``cpu``, and on an Intel GPU where present for ``auto``.
        adaptive_threads: See :class:`GraphBackend` (the engine's ``num_threads: 0``).

    Returns:
        ``(runtime, note)``: the runtime, or None for torch, and a note for logs. For ``auto`` the
        runtime is OpenVINO on the CPU when it imports: a candidate for :func:`settle_auto`.

    Raises:
        BackendError: An explicitly named runtime that cannot serve (``auto`` falls back).
    """
    if backend == 'torch':
        return None, 'torch'
    if backend == 'auto' and device.type != 'cpu':
        return None, 'torch (auto: on CUDA)'
    name = 'openvino' if backend == 'auto' else backend
    try:
        auto_device = str(requested_device).strip().lower() == 'auto'
        runtime = GraphBackend(model, name, device, _PRECISION_NAMES[dtype],
                               num_threads=num_threads, cache_dir=cache_dir,
                               openvino_device='auto' if auto_device else 'CPU',
                               adaptive_threads=adaptive_threads)
    except BackendError as exc:
        if backend != 'auto':
            raise
        _LOG.info('backend auto: %s; using torch', exc)
        return None, 'torch (auto: OpenVINO unavailable)'
    return runtime, name


def settle_auto(candidate: GraphBackend, torch_encode: Callable[[Tensor], Any], x: Tensor,
                runs: int = 3) -> tuple[GraphBackend | None, str]:
    """Backend ``auto``: keep the candidate if its encoder beats torch's on a first frame.

    Both encoders run once to warm up, then ``runs`` times each; the medians are compared. The
    first call of the candidate exports (or finds in the cache) and compiles its graphs; if that
    fails for any reason, torch is kept.

    Args:
        candidate: The runtime :func:`open_runtime` offered for ``auto``.
        torch_encode: The model's encoder.
        x: The frame's normalised network input [B, 3, H, W].
        runs: Timed runs of each encoder.

    Returns:
        ``(candidate or None for torch, a note with both timings)``.
    """

    def median_ms(fn: Callable[[], Any]) -> float:
        fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    try:
        with torch.inference_mode():
            graph_ms = median_ms(lambda: candidate.encode(x))
            torch_ms = median_ms(lambda: torch_encode(x))
    except Exception as exc:  # noqa: BLE001 - any export / compile failure: stay on torch
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        _LOG.warning('backend auto: %s unusable for this model (%s); using torch',
                     candidate.runtime, reason)
        return None, f'torch (auto: {candidate.runtime} failed)'
    timing = f'encoder {graph_ms:.1f} ms vs torch {torch_ms:.1f} ms'
    chosen = candidate if graph_ms < torch_ms else None
    note = (f'{candidate.runtime} (auto: {timing})' if chosen is not None
            else f'torch (auto: {candidate.runtime} {timing})')
    _LOG.info('backend auto chose %s', note)
    return chosen, note
