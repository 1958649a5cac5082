"""The inference engine: one encoder pass per frame, all anchors in one decoder batch.

:class:`DepthEngine` owns the model, the device and the precision, and knows nothing of ROS. Per
frame it uploads the image once, resizes and normalises it on the device, runs the encoder once,
caches the encoder features (so a new anchor re-decodes the last frame at decoder cost, see
:meth:`DepthEngine.redecode`), decodes every requested anchor as ONE batched decoder call, decodes
and fuses in float32, optionally back-projects a point cloud, and only then copies the finished
outputs to the host.

Output conventions (REP 117): depth [m] float32 at the input image resolution, +inf for "beyond
the far limit" (sky, or anything past ``far_limit_m``), NaN where undefined (never produced by a
healthy network; a NaN from the network is passed through, not hidden).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from metric_solver_ros.backends import GRAPH_BACKENDS, BackendError, check_backend
from metric_solver_ros.backends.graph import open_runtime, settle_auto
from metric_solver_ros.backends.threads import apply_torch_threads, resolve_num_threads
from metric_solver_ros.cuda_graphs import OOM_ERRORS, CudaGraphs
from metric_solver_ros.engine_setup import (
    EngineError,
    EngineOutOfMemory,
    network_input_size,
    resolve_device,
    resolve_precision,
)
from metric_solver_ros.frame_outputs import (
    HostCopy,
    PointsRequest,
    back_project,
    depth_statistics,
    pack_points,
)
from metric_solver_ros.model import MetricSolver
from metric_solver_ros.model.fusion import (
    DEFAULT_FUSION,
    FUSION_RULES,
    LARGEST_FAR_ONLY,
    decode_covering,
    fuse_decoded,
)
from metric_solver_ros.model.representation import decode as decode_outputs
from metric_solver_ros.model.representation import decode_fused
from metric_solver_ros.runtime_options import MULTI_ANCHOR_RESOLUTIONS

__all__ = ['DepthEngine', 'DepthResult', 'EngineError', 'EngineOutOfMemory', 'PointsRequest',
           'network_input_size', 'resolve_device', 'resolve_precision']

#: Most anchors decoded for one frame (bounds the decoder batch).
MAX_ANCHORS = 8
#: Widest image aspect (long : short side) for ``keep_aspect``: the network's long side follows
#: the aspect, so an 8x640 image would become 196x15680 px (~40 s on a CPU, attention growing
#: with the square of the tokens). 8:1 covers panoramic and KITTI-like (3.3:1) cameras.
MAX_ASPECT_RATIO = 8
#: Smallest network input side :meth:`DepthEngine.degrade` goes down to [px].
MIN_INPUT_SIZE_PX = 112


@dataclass
class DepthResult:
    """The finished outputs of one frame, on the host.

    Attributes:
        depth_m: float32 [H, W] depth [m] at the input resolution; +inf beyond the far limit.
        near: bool [H, W], True where the near branch (inside an anchor) produced the depth.
        anchors_m: The anchors decoded for this result [m] (one, or all fused).
        anchor_index: int8 [H, W] index into ``anchors_m`` of the anchor used per pixel when
            several were fused, else None.
        points_m: float32 [H/stride, W/stride, 3] camera-frame points [m] (NaN invalid), when
            intrinsics were given, else None (a view of ``cloud``).
        points_rgb: uint8 [H/stride, W/stride, 3] colours of ``points_m``, when asked for.
        cloud: float32 [H/stride, W/stride, F] the points in the ``sensor_msgs/PointCloud2``
            layout (``frame_outputs.pack_points``: x, y, z and, with colours, rgb): its bytes are
            the message's data. None without points.
        statistics: ``depth_info``'s ``(near_fraction, far_fraction, min_m, median_m, max_m)``
            of ``depth_m`` (``messages.depth_statistics``), computed on CUDA devices with the
            frame (a sort there is cheap); None on the CPU (the node computes them there).
        timings_ms: Stage durations [ms] (``preprocess``, ``encoder``, ``decoder``, ``fusion``,
            ``copy``, ``total``; ``encoder`` is 0 for a re-decode; with CUDA graphs ``encoder``
            includes the resize and ``decoder`` the fusion and the cloud, ``fusion`` is 0).
    """

    depth_m: np.ndarray
    near: np.ndarray
    anchors_m: tuple[float, ...]
    anchor_index: np.ndarray | None = None
    points_m: np.ndarray | None = None
    points_rgb: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    cloud: np.ndarray | None = None
    statistics: tuple[float, float, float, float, float] | None = None


class DepthEngine:
    """Metric depth from RGB images with a Metric-Solver model, on CPU or CUDA.

    Args:
        model: The network (any preset); moved to ``device`` and cast to the network precision.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` for the network (weights cast once);
            decoding and fusion always run in float32.
        input_size: Shorter side of the network input [px] (a multiple of 14 after rounding);
            None uses the model config's default.
        resize_mode: ``keep_aspect`` or ``square``.
        flip_tta: Average the network outputs of the image and its mirror (paper's protocol).
        far_limit_m: Depths beyond this [m] become +inf (None: only the representation's own
            limit, ``anchor + 552 m``).
        fusion: Rule fusing several anchors, one of ``model.fusion.FUSION_RULES`` (see that
            module and docs/METHOD.md).
        compile: Wrap the encoder and decoder in ``torch.compile``.
        cuda_graphs: On CUDA, replay each frame as two CUDA graphs, one captured per input
            signature (image size, anchor count, outputs asked for) on first use: the encoder,
            and the decoder with fusion, far limit and point cloud (so a re-decode replays the
            second alone). Batch-1 inference is launch-bound on GPUs; a graph launches a whole
            stage at once. No effect on the CPU; not combined with ``compile``. If a capture
            fails the engine logs why and runs that part eagerly (the decoder alone as a graph
            when the finish cannot be captured).
        multi_anchor_resolution: ``full``, or ``half``: decodes of several anchors run the
            heads' finest stages at half resolution (``DPTHead.forward(reduced_tail=True)``)
            and the fused result is upsampled to the camera as always; torch backend only.
            ``benchmarks/multi_anchor.py`` measures its cost and its depth against ``full``.
        channels_last: Keep the network's 4-D weights channels-last (NHWC), the layout GPU
            convolution kernels prefer in half precision; the same numbers either way.
        backend: What runs the network (``metric_solver_ros.backends``): ``torch``,
            ``openvino`` or ``onnxruntime`` (its ONNX export, made per input size on first use
            and cached in ``onnx_cache_dir``), or ``auto`` (torch on CUDA; on the CPU OpenVINO
            when installed and faster than torch on the first frame's encoder).
        num_threads: CPU threads of torch and the ONNX runtimes (process-wide for torch); 0
            picks ``backends.threads.default_num_threads()`` (and lets OpenVINO's encoder drop
            to one thread while all threads are not clearly faster: a busy CPU); None leaves the
            defaults.
        onnx_cache_dir: Where ONNX exports are kept (None: ``~/.cache/metric_solver_ros/onnx``).
    """

    def __init__(self, model: MetricSolver, device: str = 'auto', precision: str = 'auto',
                 input_size: int | None = None, resize_mode: str = 'keep_aspect',
                 flip_tta: bool = False, far_limit_m: float | None = None,
                 compile: bool = False, cuda_graphs: bool = False, backend: str = 'torch',
                 num_threads: int | None = None, onnx_cache_dir: str | None = None,
                 fusion: str = DEFAULT_FUSION, multi_anchor_resolution: str = 'full',
                 channels_last: bool = False) -> None:
        if compile and cuda_graphs:
            raise EngineError('compile and cuda_graphs exclude each other (torch.compile\'s '
                              'mode="reduce-overhead" captures its own graphs)')
        try:
            backend = check_backend(backend)
            self.num_threads = resolve_num_threads(num_threads)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        if backend in GRAPH_BACKENDS and (compile or cuda_graphs):
            raise EngineError(f'compile and cuda_graphs apply to backend torch, not {backend}')
        if self.num_threads is not None:
            apply_torch_threads(self.num_threads)
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.config = model.config
        # The ONNX runtimes take float32 graphs and inputs; the precision is their hint.
        self._net_dtype = torch.float32 if backend in GRAPH_BACKENDS else self.dtype
        self.model = model.to(device=self.device, dtype=self._net_dtype).eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.pool_m: tuple[float, ...] = tuple(float(a) for a in self.config.anchor_pool_m)
        self.input_size = int(input_size or min(self.config.input_size))
        if self.input_size < self.config.patch_size:
            raise EngineError(f'input_size {input_size} is smaller than one patch')
        network_input_size((1, 1), self.input_size, self.config.patch_size, resize_mode)
        self.resize_mode = resize_mode
        self._flip_tta = bool(flip_tta)
        self.far_limit_m = far_limit_m
        if fusion not in FUSION_RULES:
            raise EngineError(f'fusion {fusion!r} is not one of {", ".join(FUSION_RULES)}')
        self.fusion = fusion
        if multi_anchor_resolution not in MULTI_ANCHOR_RESOLUTIONS:
            raise EngineError(f'multi_anchor_resolution {multi_anchor_resolution!r} is not one '
                              f'of {", ".join(MULTI_ANCHOR_RESOLUTIONS)}')
        self.multi_anchor_resolution = multi_anchor_resolution
        self._mean = torch.tensor(self.config.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.config.std, device=self.device).view(1, 3, 1, 1)
        self._encode = self.model.encode
        self._decode = self.model.decode
        if compile:
            self._encode = torch.compile(self.model.encode)
            self._decode = torch.compile(self.model.decode)
        self._graphs = CudaGraphs() if cuda_graphs else None
        self._frame_graphs = CudaGraphs() if cuda_graphs else None  # decoder + finish
        self._host_copy = HostCopy()
        # The heads' linear stages once per image for all anchors (exact): on CUDA, where they
        # are large; on the CPU the bundled model's decoder measured 1.4x slower with them
        # (benchmarks/multi_anchor.py, RESULTS.md "Extra anchors").
        self._shared_stages = self.device.type == 'cuda'
        self._cache: _FrameCache | None = None
        self._onnx_cache_dir = onnx_cache_dir
        try:  # a GraphBackend (ONNX runtime) in place of the torch modules, or None
            self._runtime, self._backend_note = open_runtime(
                backend, self.model, self.device, self.dtype, self.num_threads, onnx_cache_dir,
                requested_device=device,
                # automatic threads: OpenVINO's encoder may run on one (a busy CPU)
                adaptive_threads=num_threads == 0)
        except BackendError as exc:
            raise EngineError(str(exc)) from None
        # backend auto on the CPU: OpenVINO against torch, timed on the first frame
        self._auto_pending = backend == 'auto' and self._runtime is not None
        if self._runtime is not None and not self._auto_pending:
            self._encode = self._runtime.encode

    @property
    def backend(self) -> str:
        """What runs the network: ``torch``, ``openvino``, ``onnxruntime`` (``auto`` pending)."""
        if self._auto_pending:
            return 'auto'
        return self._runtime.runtime if self._runtime is not None else 'torch'

    @property
    def backend_description(self) -> str:
        """The backend with its runtime, device, precision, threads and ``auto``'s timing."""
        if self._auto_pending:
            return 'auto (undecided until the first frame)'
        if self._runtime is not None:
            return f'{self._backend_note}: {self._runtime.describe()}'
        return self._backend_note

    @classmethod
    def from_checkpoint(cls, path: str | None = None, **kwargs) -> DepthEngine:
        """Build an engine from a Metric-Solver safetensors file (None: the bundled model).

        Raises:
            CheckpointError: If the file is missing, corrupt or not a Metric-Solver checkpoint.
        """
        from metric_solver_ros.checkpoint import default_model_path, load_checkpoint

        return cls(load_checkpoint(path or default_model_path()), **kwargs)

    # ----------------------------------------------------------------------------- anchors

    def validate_anchors(self, anchors_m: float | Sequence[float]) -> tuple[float, ...]:
        """Check requested anchors against the model's pool; the one validation path.

        Args:
            anchors_m: One anchor or several [m].

        Returns:
            The anchors as a tuple of floats, sorted ascending, duplicates removed.

        Raises:
            EngineError: If empty, too many, not numbers, not finite, <= 0 or outside the pool.
        """
        values = [anchors_m] if isinstance(anchors_m, (int, float)) else list(anchors_m)
        if not values:
            raise EngineError('no anchor given')
        if len(values) > MAX_ANCHORS:
            raise EngineError(f'{len(values)} anchors requested; at most {MAX_ANCHORS}')
        checked = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EngineError(f'anchor {value!r} is not a number')
            value = float(value)
            if not math.isfinite(value) or value <= 0.0:
                raise EngineError(f'anchor {value} m must be a finite number > 0')
            if not self.pool_m[0] <= value <= self.pool_m[-1]:
                raise EngineError(
                    f'anchor {value:g} m is outside the model\'s anchor pool '
                    f'[{self.pool_m[0]:g}, {self.pool_m[-1]:g}] m')
            checked.append(value)
        return tuple(sorted(set(checked)))

    # ----------------------------------------------------------------------------- frames

    def infer(self, image: np.ndarray | torch.Tensor, anchors_m: float | Sequence[float],
              color_order: str = 'rgb', points: PointsRequest | None = None) -> DepthResult:
        """Depth for one image; several anchors are fused (docs/METHOD.md's rule).

        Args:
            image: uint8 [H, W, 3] image (numpy on the host, or a tensor on any device).
            anchors_m: One anchor or several [m], within the model's pool.
            color_order: ``rgb`` or ``bgr`` (the order of ``image``'s channels).
            points: Also back-project a point cloud (on the device).

        Returns:
            The fused result at the image resolution.

        Raises:
            EngineError: For a bad image or anchors (nothing is cached then).
        """
        anchors = self.validate_anchors(anchors_m)
        with self._oom_guard():
            cache = self._encode_frame(image, color_order)
            return self._decode_cached(cache, anchors, fuse=True, points=points)[0]

    def infer_each(self, image: np.ndarray | torch.Tensor, anchors_m: Sequence[float],
                   color_order: str = 'rgb') -> list[DepthResult]:
        """One result per anchor, from one encoder pass and one batched decoder call.

        Returns:
            Results in the order of ``anchors_m`` (each anchor must be unique).
        """
        anchors = self.validate_anchors(anchors_m)
        order = [float(a) for a in anchors_m]
        if len(set(order)) != len(order):
            raise EngineError(f'duplicate anchors in {order}')
        with self._oom_guard():
            cache = self._encode_frame(image, color_order)
            results = self._decode_cached(cache, anchors, fuse=False, points=None)
        by_anchor = {r.anchors_m[0]: r for r in results}
        return [by_anchor[a] for a in order]

    def redecode(self, anchors_m: float | Sequence[float],
                 points: PointsRequest | None = None) -> DepthResult:
        """Re-decode the last frame with new anchors, reusing its cached encoder features.

        Raises:
            EngineError: If no frame has been encoded yet, or the anchors are invalid.
        """
        anchors = self.validate_anchors(anchors_m)
        cache = self._cache
        if cache is None:
            raise EngineError('no frame to re-decode yet')
        with self._oom_guard():
            return self._decode_cached(cache, anchors, fuse=True, points=points)[0]

    def degrade(self) -> str:
        """Use less memory after running out: a 25% smaller input, then the CPU.

        Returns:
            What changed, for the log.

        Raises:
            EngineError: When there is nothing left to give up (smallest input on the CPU).
        """
        self._cache = None
        if self._graphs is not None:
            self._graphs.clear()  # their memory pools belong to the old size / device
            self._frame_graphs.clear()
        if self.input_size > MIN_INPUT_SIZE_PX:
            patch = self.config.patch_size
            old = self.input_size
            smaller = int(round(0.75 * old / patch)) * patch
            self.input_size = max(MIN_INPUT_SIZE_PX, min(smaller, old - patch))
            return f'network input reduced from {old} to {self.input_size} px (short side)'
        if self.device.type != 'cpu':
            old_device = self.device
            self.device, self.dtype = torch.device('cpu'), torch.float32
            self._shared_stages = False
            self._net_dtype = torch.float32
            self.model.to(device=self.device, dtype=self.dtype)
            self._mean, self._std = self._mean.cpu(), self._std.cpu()
            if self._runtime is not None:  # ONNX Runtime on CUDA: its CPU provider now
                self._runtime, _ = open_runtime(self._runtime.runtime, self.model, self.device,
                                                self.dtype, self.num_threads,
                                                self._onnx_cache_dir)
                self._encode = self._runtime.encode
            if old_device.type == 'cuda':
                torch.cuda.empty_cache()
            return f'moved from {old_device} to the CPU (fp32)'
        raise EngineError('out of memory at the smallest input size on the CPU')

    @contextlib.contextmanager
    def _oom_guard(self):
        """Turn the device running out of memory into EngineOutOfMemory, memory released."""
        try:
            yield
        except OOM_ERRORS as exc:
            self._cache = None
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()
            raise EngineOutOfMemory(
                f'{self.device} out of memory at network input short side {self.input_size} px: '
                f'frame dropped ({str(exc).splitlines()[0][:120]})') from None

    @property
    def flip_tta(self) -> bool:
        """Whether flip test-time augmentation is on (changing it drops the cached frame)."""
        return self._flip_tta

    @flip_tta.setter
    def flip_tta(self, value: bool) -> None:
        if bool(value) != self._flip_tta:
            self._flip_tta = bool(value)
            self._cache = None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the network runs as CUDA graphs (asked for, on CUDA, no capture failed)."""
        return (self._graphs is not None and self._graphs.error is None
                and self.device.type == 'cuda')

    @property
    def _frame_graph_on(self) -> bool:
        """Whether the decoder and the finish run as one graph (else eager, or the decoder's)."""
        return self.cuda_graphs and self._frame_graphs.error is None

    @property
    def has_frame(self) -> bool:
        """Whether a frame is cached for :meth:`redecode`."""
        return self._cache is not None

    def clear_cache(self) -> None:
        """Drop the cached frame (frees its device memory)."""
        self._cache = None

    # ----------------------------------------------------------------------------- internals

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def _upload(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Validate and move an HxWx3 uint8 image to the device (pinned, non-blocking)."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise EngineError(f'expected an HxWx3 uint8 image, got {image.dtype} '
                                  f'{tuple(image.shape)}')
            if self.device.type == 'cuda':
                # One copy into pinned memory, then an asynchronous upload.
                pinned = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
                pinned.numpy()[...] = image
                return pinned.to(self.device, non_blocking=True)
            # Messages' buffers are read-only: torch needs its own (cheap) copy on the CPU.
            return torch.from_numpy(np.array(image, copy=True, order='C'))
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise EngineError(f'expected an HxWx3 uint8 image, got {image.dtype} '
                                  f'{tuple(image.shape)}')
            return image.to(self.device, non_blocking=True)
        raise EngineError(f'expected a numpy array or tensor image, got {type(image).__name__}')

    @torch.inference_mode()
    def _encode_frame(self, image: np.ndarray | torch.Tensor, color_order: str) -> _FrameCache:
        """Encode one frame; return its cache (also kept for :meth:`redecode`).

        The cache holds the settings the frame was encoded with (``flipped``), so a setting
        changed meanwhile by another thread cannot mix into this frame's decoding.
        """
        if color_order not in ('rgb', 'bgr'):
            raise EngineError(f'color_order must be rgb or bgr, not {color_order!r}')
        start = time.perf_counter()
        pixels = self._upload(image)
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        if height < 2 or width < 2:
            raise EngineError(f'image of {width}x{height} px is too small')
        if (self.resize_mode == 'keep_aspect'
                and max(height, width) > MAX_ASPECT_RATIO * min(height, width)):
            # the long side follows the aspect: attention cost grows with its square
            raise EngineError(f'image of {width}x{height} px: aspect ratio above '
                              f'{MAX_ASPECT_RATIO}:1 is not supported')
        net_hw = network_input_size((height, width), self.input_size, self.config.patch_size,
                                    self.resize_mode)
        flipped = self.flip_tta
        bgr = color_order == 'bgr'
        if self._auto_pending:
            self._auto_pending = False
            x, _ = self._prepare(pixels, net_hw, bgr, flipped)
            self._runtime, self._backend_note = settle_auto(self._runtime, self.model.encode, x)
            if self._runtime is not None:
                self._encode = self._runtime.encode

        def encode(frame: torch.Tensor) -> tuple[tuple, torch.Tensor]:
            x, chw = self._prepare(frame, net_hw, bgr, flipped)
            return self._encode(x), chw

        if self.cuda_graphs:
            # Resize, normalisation and encoder as one graph. Its static outputs are overwritten
            # by the next frame, which replaces the cache.
            self._sync()
            encoded = time.perf_counter()
            features, chw = self._graphs.run(('encode', net_hw, bgr, flipped), encode, (pixels,))
        else:
            x, chw = self._prepare(pixels, net_hw, bgr, flipped)
            self._sync()
            encoded = time.perf_counter()
            features = self._encode(x)
        self._sync()
        done = time.perf_counter()
        patch = self.config.patch_size
        self._cache = cache = _FrameCache(
            features=features, patch_hw=(net_hw[0] // patch, net_hw[1] // patch),
            image_hw=(height, width), image=chw, flipped=flipped,
            preprocess_ms=(encoded - start) * 1e3, encoder_ms=(done - encoded) * 1e3)
        return cache

    def _prepare(self, pixels: torch.Tensor, net_hw: tuple[int, int], bgr: bool, flipped: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network input of an HxWx3 uint8 image, and the image as RGB uint8 [1, 3, H, W].

        The input is resized, normalised and, when ``flipped``, batched with its mirror.
        """
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        chw = pixels.permute(2, 0, 1).unsqueeze(0)
        if bgr:
            chw = chw.flip(1)
        x = chw.float().div_(255.0)
        x = F.interpolate(x, size=net_hw, mode='bilinear', align_corners=False,
                          antialias=net_hw[0] < height or net_hw[1] < width)
        x = ((x - self._mean) / self._std).to(self._net_dtype)
        if flipped:
            x = torch.cat([x, x.flip(-1)], dim=0)
        return x, chw

    @torch.inference_mode()
    def _decode_cached(self, cache: _FrameCache, anchors: tuple[float, ...], fuse: bool,
                       points: PointsRequest | None) -> list[DepthResult]:
        # Read once: another thread may change them.
        far_limit_m, rule = self.far_limit_m, self.fusion
        start = time.perf_counter()
        count = len(anchors)
        fused = fuse and count > 1
        step = _FinishStep(fuse=fuse, rule=rule, points=points is not None,
                           with_rgb=points is not None and points.with_rgb,
                           stride=max(1, int(points.stride)) if points is not None else 1,
                           statistics=self.device.type == 'cuda',
                           reduced=(self.multi_anchor_resolution == 'half' and count > 1
                                    and self._runtime is None))
        anchors_t = torch.tensor(anchors, dtype=torch.float32, device=self.device)
        fx, fy, cx, cy = points.intrinsics if points is not None else (1.0, 1.0, 0.0, 0.0)
        limits = (points.max_range_m if points is not None else math.inf,
                  far_limit_m if far_limit_m is not None else math.inf)
        # One small upload: tensors, not constants, so a CUDA graph of the finish serves any.
        params = torch.tensor((fx, fy, cx, cy, *limits), dtype=torch.float32).to(
            self.device, non_blocking=True)
        if self._frame_graph_on:
            # Decoder, fusion and point cloud as ONE graph (static outputs: copied below).
            flat = tuple(t for pair in cache.features for t in pair)

            def frame(*inputs: torch.Tensor) -> dict[str, torch.Tensor]:
                pairs = tuple(zip(inputs[0:-3:2], inputs[1:-3:2], strict=True))
                return self._finish(step, cache, pairs, *inputs[-3:])

            outputs = self._frame_graphs.run(
                ('frame', cache.patch_hw, cache.image_hw, cache.flipped, step),
                frame, flat + (anchors_t, params, cache.image))
            self._sync()  # timings: the replay runs asynchronously
            decoded_at = fused_at = time.perf_counter()
        else:
            outputs, decoded_at = self._finish(step, cache, cache.features, anchors_t, params,
                                               cache.image, timed=True)
            self._sync()
            fused_at = time.perf_counter()
        host = self._host_copy(outputs)  # one copy of every finished output to the host
        done = time.perf_counter()
        timings = {
            'preprocess': cache.preprocess_ms, 'encoder': cache.encoder_ms,
            'decoder': (decoded_at - start) * 1e3, 'fusion': (fused_at - decoded_at) * 1e3,
            'copy': (done - fused_at) * 1e3,
        }
        cache.preprocess_ms = cache.encoder_ms = 0.0  # a later re-decode pays no encoder
        timings['total'] = sum(timings.values())
        groups = [anchors] if fuse else [(a,) for a in anchors]
        depth_np, near_np, cloud_np = host['depth'], host['near'], host['cloud']
        stats = host['stats'].tolist() if host['stats'] is not None else None
        return [
            DepthResult(depth_m=depth_np[i], near=near_np[i], anchors_m=group,
                        anchor_index=host['index'] if fused and rule == 'finest' else None,
                        points_m=cloud_np[..., :3] if cloud_np is not None else None,
                        points_rgb=host['rgb'], cloud=cloud_np, timings_ms=dict(timings),
                        statistics=tuple(stats[i]) if stats is not None else None)
            for i, group in enumerate(groups)
        ]

    def _finish(self, step: _FinishStep, cache: _FrameCache, features: tuple,
                anchors_t: torch.Tensor, params: torch.Tensor, image: torch.Tensor,
                timed: bool = False):
        """Decoder, fusion, far limit and point cloud of one frame: device tensors only.

        The same function runs eagerly (CPU, or CUDA without graphs) and as one CUDA graph.

        Args:
            step: What to compute (hashable: part of the graph's key).
            cache: The frame (its size and flip; its tensors come as ``features`` and
                ``image``, the graph's inputs).
            features: The encoder features.
            anchors_t: The anchors [m], float32 [A], ascending.
            params: float32 ``(fx, fy, cx, cy, max_range_m, far_limit_m)``.
            image: uint8 [1, 3, H, W] RGB (point colours).
            timed: Also return the time [s, perf_counter] when decoding ended (a device sync).

        Returns:
            ``{'depth', 'near', 'index', 'cloud', 'rgb', 'stats'}`` (absent ones None), plus
            the time with ``timed``.
        """
        count = int(anchors_t.shape[0])
        fused = step.fuse and count > 1
        if self._runtime is not None:
            # One decoder run per encoded image (and its mirror): the same image-major batch.
            outputs = self._runtime.decode(features, anchors_t, cache.patch_hw)
        else:
            outputs = self._decode_torch(features, cache, anchors_t, step.reduced)
        logits = {}
        for key, value in outputs.items():
            value = value.float()
            if cache.flipped:
                value = 0.5 * (value[:count] + value[count:].flip(-1))
            if fused and step.rule in LARGEST_FAR_ONLY and key == 'd_tf_logit':
                # The rule reads the far map of the largest anchor only: upsample just that one
                # (validate_anchors sorts the anchors ascending, so it is the last; decoding
                # broadcasts it, and only the largest anchor's far depth is read).
                value = value[-1:]
            logits[key] = F.interpolate(value, size=cache.image_hw, mode='bilinear',
                                        align_corners=False)
        decoded_at = None
        if timed:
            self._sync()
            decoded_at = time.perf_counter()
        index = None
        if fused and step.rule == 'finest':
            depths, nears, index = decode_fused(logits, anchors_t, self.config)
            index = index[0, 0].to(torch.int8)
        elif fused and step.rule == 'covering':
            depths, nears = decode_covering(logits, anchors_t, self.config)
        elif fused:
            decoded = decode_outputs(logits, anchors_t, self.config)
            depths = fuse_decoded(decoded, anchors_t, self.config, step.rule)
            nears = decoded['near'].any(dim=0, keepdim=True)
        else:
            decoded = decode_outputs(logits, anchors_t, self.config)
            depths, nears = decoded['depth_m'], decoded['near']
        depths = torch.where(depths > params[5], torch.inf, depths)  # the far limit (inf: none)
        out = {'depth': depths[:, 0], 'near': nears[:, 0], 'index': index, 'cloud': None,
               'rgb': None, 'stats': None}
        if step.statistics:
            out['stats'] = depth_statistics(out['depth'], out['near'])
        if step.points:
            xyz, rgb = back_project(depths[0, 0], image, tuple(params[:4]), step.stride,
                                    params[4], step.with_rgb)
            out['cloud'], out['rgb'] = pack_points(xyz, rgb), rgb
        return (out, decoded_at) if timed else out

    def _decode_torch(self, features: tuple, cache: _FrameCache, anchors_t: torch.Tensor,
                      reduced: bool) -> dict[str, torch.Tensor]:
        """The torch modules' decoder batch: image-major, all anchors of each image."""
        count = len(anchors_t)
        if cache.flipped:
            # Batch: A anchors for the image, then A for its mirror (features batch 2 -> 2A).
            features = tuple((t.repeat_interleave(count, 0), c.repeat_interleave(count, 0))
                             for t, c in features)
            anchors_net = anchors_t.repeat(2)
        else:
            anchors_net = anchors_t
        if self.cuda_graphs and not self._frame_graph_on:
            patch_hw = cache.patch_hw

            def decode(*flat: torch.Tensor) -> dict[str, torch.Tensor]:
                pairs = tuple(zip(flat[0:-1:2], flat[1:-1:2], strict=True))
                return self._decode(pairs, flat[-1], patch_hw, check_anchors=False,
                                    reduced_tail=reduced, shared_stages=self._shared_stages)

            flat = tuple(t for pair in features for t in pair) + (anchors_net,)
            # Static outputs, valid until this graph's next replay: every use in
            # _finish copies (float, interpolate) before returning.
            return self._graphs.run(('decode', patch_hw, reduced), decode, flat)
        return self._decode(features, anchors_net, cache.patch_hw, check_anchors=False,
                            reduced_tail=reduced, shared_stages=self._shared_stages)


@dataclass(frozen=True)
class _FinishStep:
    """What :meth:`DepthEngine._finish` computes for a frame (hashable: a graph key part)."""

    fuse: bool
    rule: str
    points: bool
    with_rgb: bool
    stride: int
    reduced: bool
    statistics: bool


@dataclass
class _FrameCache:
    """What the engine keeps of the last encoded frame."""

    features: tuple
    patch_hw: tuple[int, int]
    image_hw: tuple[int, int]
    image: torch.Tensor  # uint8 [1, 3, H, W] RGB on the device (for point colours)
    flipped: bool  # encoded with its mirror image (flip_tta): features of batch 2
    preprocess_ms: float
    encoder_ms: float
