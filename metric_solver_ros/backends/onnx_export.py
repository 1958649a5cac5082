"""ONNX export of a Metric-Solver model: an encoder graph, a decoder graph and a JSON sidecar.

The split keeps the engine's design (one encoder pass per frame, every anchor in one decoder
batch, cached features re-decoded at decoder cost) in any ONNX runtime:

- ``encoder.onnx``: ``image`` float32 [1, 3, H, W] (normalised, see the sidecar's
  ``preprocessing``) -> ``tokens_0..3`` [1, N, D] (the tapped layers' patch tokens) and
  ``cls_0..3`` [1, D] (their class tokens, unused by the heads);
- ``decoder.onnx``: ``tokens_0..3`` of ONE image and ``anchors_m`` float32 [A] (dynamic batch of
  anchors [m], each inside the anchor pool) -> the logits [A, 1, h, w] named in the sidecar's
  ``outputs`` (``d_sn_logit``, ``mask_logit``, ``d_tf_logit``); the anchor embedding (log-linear
  interpolation of the pool) is inside the graph;
- ``metric_solver.json``: preprocessing, anchor pool, output semantics, the model config, the
  source checkpoint and its sha256, the tool versions and a parity check against PyTorch.

The image size is fixed per export (static shapes: what TensorRT and OpenVINO run fastest);
the engine exports once per network input size and keeps the exports in a cache directory
(:func:`find_or_export`). The default opset, 17, is the newest TensorRT 8.6 (JetPack 5/6) reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metric_solver_ros.model import MetricSolver

_LOG = logging.getLogger(__name__)

ENCODER_FILE = 'encoder.onnx'
DECODER_FILE = 'decoder.onnx'
SIDECAR_FILE = 'metric_solver.json'
SIDECAR_FORMAT = 'metric_solver_onnx'
SIDECAR_VERSION = 1
#: Opset of the exported graphs: 17 has LayerNormalization and is read by TensorRT 8.6.
DEFAULT_OPSET = 17
#: Largest anchor batch the decoder graph declares (the engine decodes at most 8, 16 with flip).
MAX_ANCHOR_BATCH = 64
#: Largest max |ONNX - PyTorch| of the logits accepted at export [logit units].
PARITY_TOLERANCE = 1e-3

_CHATTY_LOGGERS = ('onnx_ir', 'onnxscript', 'torch.onnx', 'torch.export', 'torch._export')

_OUTPUT_SEMANTICS = {
    'd_sn_logit': 'near depth ratio logit z: depth_near [m] = sigmoid(z) * anchor',
    'mask_logit': 'near mask logit z: the pixel is nearer than the anchor where z >= 0',
    'd_tf_logit': 'far depth logit z: depth_far [m] = anchor + softplus(-z) / k; +inf where '
                  'softplus(-z) > -ln(d_tf_eps)',
}


def logit_names(model: MetricSolver) -> tuple[str, ...]:
    """The decoder graph's outputs, in order (the keys of ``MetricSolver.decode``)."""
    config = model.config
    return (('d_sn_logit',) + (('mask_logit',) if config.mask_head else ())
            + (('d_tf_logit',) if config.far_head else ()))


class _EncoderGraph(nn.Module):
    """``MetricSolver.encode`` with flat outputs: 4 patch-token maps, then 4 class tokens."""

    def __init__(self, model: MetricSolver) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        features = self.model.encode(image)
        return tuple(t for t, _ in features) + tuple(c for _, c in features)


class _DecoderGraph(nn.Module):
    """``MetricSolver.decode`` of one image's patch tokens for a batch of anchors [m]."""

    def __init__(self, model: MetricSolver, patch_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.patch_hw = patch_hw
        self.names = logit_names(model)

    def forward(self, tokens_0: Tensor, tokens_1: Tensor, tokens_2: Tensor, tokens_3: Tensor,
                anchors_m: Tensor) -> tuple[Tensor, ...]:
        # The heads read only the patch tokens (DA-V2 use_clstoken=False): no class inputs.
        features = tuple((t, t[:, 0]) for t in (tokens_0, tokens_1, tokens_2, tokens_3))
        # Per-anchor stages (not shared_stages): the shared path's broadcast over a dynamic
        # anchor batch does not survive export (OpenVINO returned an empty batch for 3 anchors).
        outputs = self.model.decode(features, anchors_m, self.patch_hw, check_anchors=False)
        return tuple(outputs[name] for name in self.names)


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's state dict (names, shapes and float32 values): its identity.

    Floating tensors are hashed as float32 (what the graphs hold), so a float16 checkpoint and
    its float32 copy on any device have one digest.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).contiguous()
        digest.update(f'{name}|{value.dtype}|{tuple(value.shape)}\n'.encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b'')
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _export(module: nn.Module, args: tuple, path: pathlib.Path, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_shapes: Any, opset: int) -> None:
    # The exporter's passes log every step at INFO and warn about absent torchvision ops.
    quiet = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            program = torch.onnx.export(
                module, args, dynamo=True, verbose=False, opset_version=opset,
                input_names=list(input_names), output_names=list(output_names),
                dynamic_shapes=dynamic_shapes)
        program.save(str(path))
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: MetricSolver, out_dir: str | os.PathLike, input_hw: tuple[int, int],
                checkpoint: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                verify: bool = True) -> dict[str, Any]:
    """Export the encoder and decoder graphs of ``model`` plus the sidecar into ``out_dir``.

    Args:
        model: The network (any device / dtype: exported from a float32 CPU copy).
        out_dir: Destination directory (created; the three files are overwritten).
        input_hw: Network input ``(height, width)`` [px], multiples of the patch size.
        checkpoint: The checkpoint file ``model`` was loaded from, recorded with its sha256.
        opset: ONNX opset of the graphs.
        verify: Run both graphs with ONNX Runtime (when installed) on a random input and record
            the max |difference| of the logits to PyTorch in the sidecar's ``parity``.

    Returns:
        The sidecar (as written to ``metric_solver.json``).

    Raises:
        ValueError: If ``input_hw`` is not made of positive multiples of the patch size, or the
            graphs differ from PyTorch by more than :data:`PARITY_TOLERANCE`.
    """
    config = model.config
    patch = config.patch_size
    height, width = (int(v) for v in input_hw)
    if height < patch or width < patch or height % patch or width % patch:
        raise ValueError(f'input size {height}x{width} px: both sides must be positive '
                         f'multiples of the patch size {patch} px')
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = model
    if any(p.dtype != torch.float32 or p.device.type != 'cpu' for p in model.parameters()):
        source = _float32_cpu_copy(model)
    patch_hw = (height // patch, width // patch)
    tap_names = [f'tokens_{i}' for i in range(len(config.taps))]
    cls_names = [f'cls_{i}' for i in range(len(config.taps))]
    names = logit_names(source)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, height, width, generator=generator)
    pool = config.anchor_pool_m
    # Two distinct anchors: a traced batch of 1 would be specialised to a static 1.
    anchors = torch.tensor([pool[0], pool[-1]] if len(pool) > 1 else [pool[0]] * 2)
    with torch.no_grad():
        flat = _EncoderGraph(source).eval()(image)
        tokens = flat[:len(tap_names)]
        logits = _DecoderGraph(source, patch_hw).eval()(*tokens, anchors)
    batch = torch.export.Dim('anchors', min=1, max=MAX_ANCHOR_BATCH)
    _export(_EncoderGraph(source).eval(), (image,), out / ENCODER_FILE, ['image'],
            tap_names + cls_names, None, opset)
    _export(_DecoderGraph(source, patch_hw).eval(), (*tokens, anchors), out / DECODER_FILE,
            tap_names + ['anchors_m'], names, (*([None] * len(tap_names)), {0: batch}), opset)
    out_hw = list(logits[0].shape[-2:])
    tokens_shape = list(tokens[0].shape)
    import onnx

    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:  # pragma: no cover - torch.onnx.export(dynamo=True) needs it
        onnxscript_version = None
    sidecar: dict[str, Any] = {
        'format': SIDECAR_FORMAT,
        'format_version': SIDECAR_VERSION,
        'input_hw': [height, width],
        'patch_hw': list(patch_hw),
        'output_hw': out_hw,
        'preprocessing': {
            'color_order': 'rgb',
            'layout': 'NCHW float32, batch 1',
            'resize': ('bilinear (align_corners=False, antialiased when shrinking) of the '
                       'image to input_hw; the engine picks input_hw from the camera image and '
                       'its input_size / resize_mode'),
            'scale': 1.0 / 255.0,
            'mean': list(config.mean),
            'std': list(config.std),
            'formula': 'image = (rgb_uint8 / 255 - mean) / std, per channel',
        },
        'anchor_pool_m': list(pool),
        'graphs': {
            'encoder': {
                'file': ENCODER_FILE,
                'sha256': file_sha256(out / ENCODER_FILE),
                'inputs': {'image': [1, 3, height, width]},
                'outputs': {**{n: tokens_shape for n in tap_names},
                            **{n: [1, tokens_shape[-1]] for n in cls_names}},
            },
            'decoder': {
                'file': DECODER_FILE,
                'sha256': file_sha256(out / DECODER_FILE),
                'inputs': {**{n: tokens_shape for n in tap_names}, 'anchors_m': ['anchors']},
                'outputs': {n: ['anchors', 1, *out_hw] for n in names},
                'max_anchors': MAX_ANCHOR_BATCH,
            },
        },
        'outputs': {n: _OUTPUT_SEMANTICS[n] for n in names},
        'decoding': {
            'k_per_m': config.k, 'd_tf_eps': config.d_tf_eps,
            'rule': ('upsample the logits bilinearly to the camera image, then depth = '
                     'depth_near where near else depth_far (docs/METHOD.md; several anchors: '
                     'the smallest anchor whose mask says near, else the far depth of the '
                     'largest)'),
        },
        'config': config.to_dict(),
        'source': {
            'checkpoint': None if checkpoint is None else str(checkpoint),
            'checkpoint_sha256': None if checkpoint is None else file_sha256(checkpoint),
            'weights_sha256': weights_sha256(source),
        },
        'exported_with': {'torch': torch.__version__, 'onnx': onnx.__version__,
                          'onnxscript': onnxscript_version, 'opset': int(opset)},
    }
    if verify:
        sidecar['parity'] = _verify(out, image, tokens, anchors, flat, logits, names)
    (out / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=1) + '\n')
    return sidecar


def _float32_cpu_copy(model: MetricSolver) -> MetricSolver:
    import copy

    return copy.deepcopy(model).to(device='cpu', dtype=torch.float32).eval()


def _verify(out: pathlib.Path, image: Tensor, tokens: Sequence[Tensor], anchors: Tensor,
            flat: Sequence[Tensor], logits: Sequence[Tensor], names: Sequence[str]
            ) -> dict[str, Any]:
    """Max |ONNX Runtime - PyTorch| of both graphs' outputs on the export's random input."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {'checked': False, 'reason': 'onnxruntime is not installed'}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(str(out / ENCODER_FILE), options,
                                   providers=['CPUExecutionProvider'])
    decoder = ort.InferenceSession(str(out / DECODER_FILE), options,
                                   providers=['CPUExecutionProvider'])
    got = encoder.run(None, {'image': image.numpy()})
    encoder_diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, flat, strict=True))
    feeds = {f'tokens_{i}': t.numpy() for i, t in enumerate(tokens)}
    got = decoder.run(list(names), {**feeds, 'anchors_m': anchors.numpy()})
    decoder_diff = max(float(np.abs(g - r.numpy()).max())
                       for g, r in zip(got, logits, strict=True))
    if max(encoder_diff, decoder_diff) > PARITY_TOLERANCE:
        raise ValueError(f'ONNX export differs from PyTorch: max |diff| encoder '
                         f'{encoder_diff:.3g}, decoder {decoder_diff:.3g} (tolerance '
                         f'{PARITY_TOLERANCE:g})')
    return {'checked': True, 'runtime': f'onnxruntime {ort.__version__} CPU',
            'encoder_max_abs_diff': encoder_diff, 'decoder_max_abs_diff': decoder_diff,
            'anchors_m': anchors.tolist()}


def read_sidecar(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check the sidecar of an export directory.

    Raises:
        FileNotFoundError: If the sidecar or a graph file is missing.
        ValueError: If the sidecar is not a Metric-Solver ONNX sidecar of a known version.
    """
    root = pathlib.Path(export_dir)
    path = root / SIDECAR_FILE
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no ONNX export sidecar (metric-solver export '
                                f'--format onnx writes one)')
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: not JSON ({exc})') from None
    if not isinstance(sidecar, dict) or sidecar.get('format') != SIDECAR_FORMAT:
        raise ValueError(f'{path}: not a {SIDECAR_FORMAT} sidecar')
    if sidecar.get('format_version') != SIDECAR_VERSION:
        raise ValueError(f'{path}: sidecar version {sidecar.get("format_version")!r}; this '
                         f'version reads {SIDECAR_VERSION}')
    for graph in sidecar['graphs'].values():
        if not (root / graph['file']).is_file():
            raise FileNotFoundError(f'{root / graph["file"]}: graph named by {path} is missing')
    return sidecar


def default_cache_dir() -> pathlib.Path:
    """Where the engine keeps its exports: ``$XDG_CACHE_HOME/metric_solver_ros/onnx``."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return pathlib.Path(base) / 'metric_solver_ros' / 'onnx'


def find_or_export(model: MetricSolver, cache_dir: str | os.PathLike | None,
                   input_hw: tuple[int, int], weights_digest: str | None = None
                   ) -> pathlib.Path:
    """The export of ``model`` at ``input_hw`` in ``cache_dir``, exported there when missing.

    An export is reused when its sidecar's ``weights_sha256``, size, opset and torch version
    match. A new one is written into a temporary directory and renamed into place, so two
    processes exporting at once do not read half-written graphs.

    Args:
        model: The network.
        cache_dir: The cache (None: :func:`default_cache_dir`).
        input_hw: Network input ``(height, width)`` [px].
        weights_digest: ``weights_sha256(model)`` when the caller has it already.

    Returns:
        The export directory.
    """
    digest = weights_digest or weights_sha256(model)
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    height, width = (int(v) for v in input_hw)
    target = root / f'{digest[:16]}-{height}x{width}-opset{DEFAULT_OPSET}'
    if _usable(target, digest, (height, width)):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{target.name}.', dir=root))
    try:
        _LOG.info('exporting the model to ONNX for a %dx%d px network input (once per size, '
                  'cached in %s)', width, height, root)
        export_onnx(model, staging, (height, width))
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race (the target exists and is not empty)
            if not _usable(target, digest, (height, width)):
                shutil.rmtree(target, ignore_errors=True)
                os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _usable(export_dir: pathlib.Path, digest: str, input_hw: tuple[int, int]) -> bool:
    if not (export_dir / SIDECAR_FILE).is_file():
        return False
    try:
        sidecar = read_sidecar(export_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (sidecar['source'].get('weights_sha256') == digest
            and tuple(sidecar['input_hw']) == tuple(input_hw)
            and sidecar['exported_with'].get('torch') == torch.__version__)
