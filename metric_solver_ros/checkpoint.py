"""Metric-Solver checkpoints (safetensors, config inside) and importers of official weights.

A checkpoint is one ``.safetensors`` file: the model's state dict plus string metadata
``format = 'metric_solver'``, ``format_version = '1'`` and ``config`` (JSON of
``MetricSolverConfig.to_dict()``), so :func:`load_checkpoint` rebuilds the exact model from the
file alone. Official DINOv2 / Depth Anything V2 ``.pth`` files are read with
``torch.load(weights_only=True)`` only (a pickle that would run code is refused) and mapped onto
a model by :func:`import_dinov2` / :func:`import_depth_anything_v2`, which report every key.
:func:`load_depth_anything_v2` loads an official DA-V2 file as itself (a teacher), strictly.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metric_solver_ros.model import (
    DAV2_PRESETS,
    PRESETS,
    DepthAnythingV2,
    DepthAnythingV2Config,
    MetricSolver,
    MetricSolverConfig,
    create_depth_anything_v2,
    create_model,
)

FORMAT = 'metric_solver'
FORMAT_VERSION = '1'
RESERVED_METADATA = ('format', 'format_version', 'config')

DEFAULT_MODEL_PATH: pathlib.Path = pathlib.Path(__file__).resolve().parent / 'weights' / \
    'default.safetensors'
"""The bundled default model (package data ``metric_solver_ros/weights/default.safetensors``)."""

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint or official weight file cannot be used; the message names file and problem."""


def default_model_path() -> pathlib.Path:
    """Return the path of the bundled default model (it may not exist in a source checkout)."""
    return DEFAULT_MODEL_PATH


# --------------------------------------------------------------------------- safetensors I/O


def save_checkpoint(path: PathLike, model: MetricSolver,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model`` (weights and config) to a safetensors file, atomically.

    Args:
        path: Destination ``.safetensors`` file (parent directories are created).
        model: The network; its tensors are saved in their current dtype.
        metadata: Extra string metadata (e.g. ``{'source': 'dinov2_vits14_pretrain.pth'}``);
            the keys ``format``, ``format_version`` and ``config`` are reserved.

    Raises:
        ValueError: Reserved or non-string metadata.
    """
    from safetensors.torch import save_file

    extra = dict(metadata or {})
    bad = [k for k, v in extra.items()
           if k in RESERVED_METADATA or not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f'metadata keys {bad}: reserved ({", ".join(RESERVED_METADATA)}) or '
                         f'not str -> str')
    meta = {**extra, 'format': FORMAT, 'format_version': FORMAT_VERSION,
            'config': json.dumps(model.config.to_dict(), sort_keys=True)}
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_header(path: PathLike) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Return (metadata, {key: shape}) of a safetensors file without reading the weights."""
    from safetensors import safe_open

    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for every corruption
        raise CheckpointError(f'{path}: not a readable safetensors file (truncated or corrupt?): '
                              f'{exc}') from None
    return metadata, shapes


def _config_from_metadata(path: PathLike, metadata: Mapping[str, str]) -> MetricSolverConfig:
    fmt = metadata.get('format')
    if fmt != FORMAT:
        raise CheckpointError(f'{path}: not a Metric-Solver checkpoint (metadata format '
                              f'{fmt!r}, expected {FORMAT!r}); convert official weights with '
                              f'`metric-solver convert`')
    version = metadata.get('format_version')
    if version != FORMAT_VERSION:
        raise CheckpointError(f'{path}: unsupported checkpoint format_version {version!r} '
                              f'(this code reads {FORMAT_VERSION!r})')
    if 'config' not in metadata:
        raise CheckpointError(f'{path}: checkpoint metadata has no model config')
    try:
        return MetricSolverConfig.from_dict(json.loads(metadata['config']))
    except (json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f'{path}: invalid model config in metadata: {exc}') from None


def read_checkpoint_config(path: PathLike) -> MetricSolverConfig:
    """Return the config stored in a checkpoint (reads the header only, no weights).

    Raises:
        CheckpointError: Missing, corrupt or foreign file, or an invalid config.
    """
    metadata, _ = _read_header(path)
    return _config_from_metadata(path, metadata)


def read_checkpoint_metadata(path: PathLike) -> dict[str, str]:
    """Return all string metadata of a checkpoint (format, config JSON, extras)."""
    metadata, _ = _read_header(path)
    _config_from_metadata(path, metadata)
    return metadata


def _list(names: list[str], limit: int = 8) -> str:
    shown = ', '.join(names[:limit])
    return shown + (f', ... ({len(names) - limit} more)' if len(names) > limit else '')


def _key_problems(expected: Mapping[str, list[int]], found: Mapping[str, list[int]]) -> list[str]:
    """Missing, unexpected and wrongly shaped keys of ``found`` against ``expected`` ({key: shape}).

    Returns:
        One line per kind of problem (a few keys named, then a count); empty if all match.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(f'{k} (file {found[k]}, model {expected[k]})'
                   for k in set(expected) & set(found) if found[k] != expected[k])
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys: {_list(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys: {_list(unexpected)}')
    if wrong:
        problems.append(f'{len(wrong)} keys with wrong shapes: {_list(wrong)}')
    return problems


def load_checkpoint(path: PathLike, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> MetricSolver:
    """Rebuild the exact model stored in a checkpoint (strict), in eval mode.

    Args:
        path: A file written by :func:`save_checkpoint`.
        device: Where to put the model (default CPU).
        dtype: Floating dtype of the parameters (default: as stored).

    Raises:
        CheckpointError: Missing / truncated / corrupt file, missing metadata, unknown format
            version, invalid config, missing or unexpected keys, or wrong shapes (all listed).
    """
    from safetensors import safe_open

    metadata, shapes = _read_header(path)
    config = _config_from_metadata(path, metadata)
    model = create_model(config, device='meta')
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    problems = _key_problems(expected, shapes)
    if problems:
        raise CheckpointError(f'{path}: weights do not match the stored {config.preset!r} '
                              f'config: ' + '; '.join(problems))
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            state = {k: f.get_tensor(k) for k in expected}
    except Exception as exc:
        raise CheckpointError(f'{path}: cannot read the weights (truncated or corrupt?): '
                              f'{exc}') from None
    model.load_state_dict(state, strict=True, assign=True)
    # Buffers that are not saved (the pool values, from the config) are still on `meta`.
    model.anchor_pool.anchors_m = torch.tensor(config.anchor_pool_m, dtype=torch.float32)
    model.to(device=device or 'cpu', dtype=dtype)
    return model.eval()


# ------------------------------------------------------------------------ official weights


def load_official_state_dict(path: PathLike) -> dict[str, Tensor]:
    """Read an official DINOv2 / Depth Anything V2 weight file into a flat state dict.

    ``.pth`` files are read with ``torch.load(map_location='cpu', weights_only=True)`` only: a
    pickle that needs anything beyond tensors and plain containers (one that would run code) is
    refused before anything runs. ``.safetensors`` files are read as such. A state dict nested
    under ``'model'`` or ``'state_dict'`` is unwrapped, a ``module.`` prefix (DDP) stripped and
    non-tensor entries dropped.

    Raises:
        CheckpointError: Missing, unreadable or refused file, or no tensors inside.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such weight file')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        try:
            obj = load_file(str(path), device='cpu')
        except Exception as exc:
            raise CheckpointError(f'{path}: not a readable safetensors file: {exc}') from None
    else:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as exc:
            detail = re.search(r'Unsupported global: [^\n]*|Unsupported operand[^\n]*', str(exc))
            reason = detail.group(0).strip() if detail else str(exc).splitlines()[0]
            raise CheckpointError(f'{path}: refused: the pickle needs more than plain tensors '
                                  f'(weights_only load failed: {reason}); nothing was run') \
                from None
        except Exception as exc:
            raise CheckpointError(f'{path}: cannot read the weight file ({type(exc).__name__}: '
                                  f'{exc})') from None
    for key in ('model', 'state_dict'):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path}: expected a state dict, found {type(obj).__name__}')
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f'{path}: no tensors in the file')
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


@dataclass
class ImportReport:
    """What an import did, key by key (model key names unless stated).

    Attributes:
        loaded: Model keys fully overwritten from the file.
        partial: Model keys partly overwritten (``projects.i.weight``: the image channels
            copied, the anchor channels zeroed).
        skipped: File key -> why it was not used.
        missing: Model keys of the imported part that the file did not provide (they keep
            their random initialisation).
    """

    loaded: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def format(self, max_names: int = 20) -> str:
        """Return a human-readable multi-line summary (counts, then names and reasons)."""
        lines = [f'loaded: {len(self.loaded)} tensors, partial: {len(self.partial)}, '
                 f'skipped: {len(self.skipped)}, missing: {len(self.missing)}']
        for name in self.partial:
            lines.append(f'  partial  {name}: image channels copied, anchor channels zeroed')
        for i, (name, reason) in enumerate(sorted(self.skipped.items())):
            if i == max_names:
                lines.append(f'  skipped  ... {len(self.skipped) - max_names} more')
                break
            lines.append(f'  skipped  {name}: {reason}')
        for i, name in enumerate(self.missing):
            if i == max_names:
                lines.append(f'  missing  ... {len(self.missing) - max_names} more')
                break
            lines.append(f'  missing  {name} (randomly initialised)')
        return '\n'.join(lines)


def _shape_reason(source: Tensor, target: Tensor) -> str:
    return f'shape {list(source.shape)} in file, {list(target.shape)} in model'


_UNUSED_DAV2 = re.compile(r'^scratch\.refinenet4\.resConfUnit1\.')
_PROJECT_WEIGHT = re.compile(r'^projects\.\d+\.weight$')


@torch.no_grad()
def _import_encoder(model: MetricSolver, state: Mapping[str, Tensor], prefix: str,
                    report: ImportReport) -> None:
    targets = model.pretrained.state_dict(keep_vars=True)
    for key, value in state.items():
        name = key[len(prefix):]
        if name not in targets:
            report.skipped[key] = 'not a key of the DINOv2 encoder'
            continue
        target = targets[name]
        if target.shape != value.shape:
            report.skipped[key] = _shape_reason(value, target)
            continue
        target.copy_(value)
        report.loaded.append(f'pretrained.{name}')


def _missing(model: MetricSolver, prefix: str, report: ImportReport) -> list[str]:
    written = set(report.loaded) | set(report.partial)
    return [k for k in model.state_dict() if k.startswith(prefix) and k not in written
            and k != 'anchor_pool.anchors_m']  # the pool values come from the config


def import_dinov2(model: MetricSolver, state_dict: Mapping[str, Tensor]) -> ImportReport:
    """Copy an official DINOv2 backbone (``dinov2_vit*14_pretrain.pth`` keys) into the encoder.

    Keys may also carry DA-V2's ``pretrained.`` prefix. Keys of other shapes (another preset)
    or unknown to the encoder are skipped with the reason.

    Args:
        model: The target network (modified in place).
        state_dict: From :func:`load_official_state_dict`.

    Returns:
        The report; ``missing`` lists encoder keys the file lacked.
    """
    report = ImportReport()
    plain = {k: v for k, v in state_dict.items() if not k.startswith('pretrained.')}
    prefixed = {k: v for k, v in state_dict.items() if k.startswith('pretrained.')}
    _import_encoder(model, plain, '', report)
    _import_encoder(model, prefixed, 'pretrained.', report)
    report.missing = _missing(model, 'pretrained.', report)
    return report


@torch.no_grad()
def import_depth_anything_v2(model: MetricSolver,
                             state_dict: Mapping[str, Tensor]) -> ImportReport:
    """Copy a Depth Anything V2 model (``pretrained.*``, ``depth_head.*``) into the network.

    ``pretrained.*`` goes to the encoder; ``depth_head.*`` to the near AND far heads where
    shapes match. ``projects.i.weight`` has extra anchor input channels here: the file's
    channels are copied and the anchor channels zeroed (reported as partial), so the initial
    heads compute DA-V2's function for every anchor. DA-V2's unused
    ``scratch.refinenet4.resConfUnit1`` and every other unusable key are skipped with the reason.

    Args:
        model: The target network (modified in place).
        state_dict: From :func:`load_official_state_dict`.

    Returns:
        The report; ``missing`` lists model keys the file did not provide (anchor pool, mask
        projection, ...).
    """
    report = ImportReport()
    encoder = {k: v for k, v in state_dict.items() if k.startswith('pretrained.')}
    _import_encoder(model, encoder, 'pretrained.', report)
    heads = [('near_head', model.near_head)]
    if model.far_head is not None:
        heads.append(('far_head', model.far_head))
    dim = model.config.embed_dim
    for key, value in state_dict.items():
        if key.startswith('pretrained.'):
            continue
        if not key.startswith('depth_head.'):
            report.skipped[key] = ('not part of a Depth Anything V2 model (pretrained.*, '
                                   'depth_head.*)')
            continue
        name = key[len('depth_head.'):]
        if _UNUSED_DAV2.match(name):
            report.skipped[key] = ('unused by Depth Anything V2 itself (refinenet4 has no skip '
                                   'input); not part of this model')
            continue
        for head_name, head in heads:
            targets = head.state_dict(keep_vars=True)
            if name not in targets:
                report.skipped[key] = 'no such key in the Metric-Solver head'
                break
            target = targets[name]
            if _PROJECT_WEIGHT.match(name) and value.dim() == 4 and value.shape[1] == dim \
                    and target.shape[0] == value.shape[0] and target.shape[2:] == value.shape[2:]:
                target[:, :dim].copy_(value)
                target[:, dim:].zero_()
                report.partial.append(f'{head_name}.{name}')
            elif target.shape == value.shape:
                target.copy_(value)
                report.loaded.append(f'{head_name}.{name}')
            else:
                report.skipped[key] = _shape_reason(value, target)
                break
    report.missing = _missing(model, '', report)
    return report


#: The official DINOv2 ``*_reg`` models (``dinov2/hub/backbones.py``): registers, and the
#: position-embedding interpolation they were trained with.
_REGISTER_MODEL_SETTINGS = {'interpolate_offset': 0.0, 'interpolate_antialias': True}


def official_encoder_settings(state_dict: Mapping[str, Tensor]) -> dict[str, object]:
    """Config fields an official file implies beyond its preset: ``{}`` or a ``_reg`` model's.

    Args:
        state_dict: From :func:`load_official_state_dict` (plain or ``pretrained.`` keys).

    Returns:
        ``num_register_tokens`` (from ``register_tokens``' shape), ``interpolate_offset`` 0 and
        ``interpolate_antialias`` True for a model with registers, else nothing.
    """
    tokens = state_dict.get('register_tokens', state_dict.get('pretrained.register_tokens'))
    if tokens is None:
        return {}
    return {'num_register_tokens': int(tokens.shape[1]), **_REGISTER_MODEL_SETTINGS}


def _encoder_size(state_dict: Mapping[str, Tensor], prefix: str) -> tuple[int, int] | None:
    """``(token width, block count)`` of the encoder under ``prefix``, None without cls_token.

    The block count is the highest ``blocks.i`` index + 1 (0 without blocks).
    """
    token = state_dict.get(prefix + 'cls_token')
    if token is None or token.dim() == 0:
        return None
    pattern = re.compile(re.escape(prefix) + r'blocks\.(\d+)\.')
    blocks = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return int(token.shape[-1]), max(blocks) + 1 if blocks else 0


def official_encoder_size(state_dict: Mapping[str, Tensor]) -> tuple[int, int] | None:
    """Token width and block count of the encoder of an official file, from tensor shapes only.

    Args:
        state_dict: From :func:`load_official_state_dict`: DINOv2 keys (``cls_token``,
            ``blocks.i.*``) or Depth Anything V2's (``pretrained.cls_token``, ...).

    Returns:
        ``(embed_dim, depth)``, or None when the file has no ``cls_token`` (not an encoder).
    """
    return _encoder_size(state_dict, '') or _encoder_size(state_dict, 'pretrained.')


def preset_of_encoder(embed_dim: int, depth: int) -> str | None:
    """The preset whose encoder has this token width and block count, or None."""
    return next((name for name, config in PRESETS.items()
                 if (config.embed_dim, config.depth) == (embed_dim, depth)), None)


def import_official(state_dict: Mapping[str, Tensor], preset: str, kind: str | None = None,
                    **overrides: object) -> tuple[MetricSolver, ImportReport, str]:
    """Build ``preset`` for an official file and import it; refuse an incomplete encoder.

    Args:
        state_dict: From :func:`load_official_state_dict`.
        preset: Model preset the file belongs to (``vits``, ``vitb``, ...).
        kind: ``'dinov2'`` or ``'dav2'``; None: DA-V2 when the file has ``depth_head.*`` keys.
        **overrides: Config fields (``input_size``, ``anchor_pool_m``, ...); registers and
            their interpolation settings follow the file (:func:`official_encoder_settings`).

    Returns:
        ``(model, report, kind)``; parts the file does not provide (anchor pool, mask
        projection, the far head for DINOv2) keep the current torch seed's initialisation.

    Raises:
        CheckpointError: Nothing fits the preset, or the file lacks encoder tensors (a truncated
            or other file: the encoder would be partly random).
    """
    from metric_solver_ros.model import get_config

    if kind is None:
        kind = 'dav2' if any(k.startswith('depth_head.') for k in state_dict) else 'dinov2'
    if kind not in ('dinov2', 'dav2'):
        raise ValueError(f"kind must be 'dinov2' or 'dav2', got {kind!r}")
    model = create_model(get_config(preset, **{**official_encoder_settings(state_dict),
                                               **overrides}))
    importer = import_dinov2 if kind == 'dinov2' else import_depth_anything_v2
    report = importer(model, state_dict)
    name = 'DINOv2' if kind == 'dinov2' else 'Depth Anything V2'
    if not report.loaded and not report.partial:
        raise CheckpointError(f'no {name} tensor fits the {preset!r} model (wrong preset, or '
                              f'not a {name} file?)\n{report.format()}')
    encoder_missing = [k for k in report.missing if k.startswith('pretrained.')]
    if encoder_missing:
        raise CheckpointError(f'the file lacks {len(encoder_missing)} tensors of the {preset!r} '
                              f'{name} encoder (truncated, or another model?): '
                              f'{", ".join(encoder_missing[:5])}'
                              + (' ...' if len(encoder_missing) > 5 else '')
                              + f'\n{report.format()}')
    return model, report, name


# ------------------------------------------------------------- Depth Anything V2 as itself


def infer_depth_anything_v2_preset(state_dict: Mapping[str, Tensor]) -> str:
    """Tell the preset of a Depth Anything V2 state dict from its tensor shapes.

    The token width (``pretrained.cls_token``) names the encoder; the block count breaks ties.

    Raises:
        CheckpointError: No encoder tensors, or a width / block count of no DA-V2 preset.
    """
    size = _encoder_size(state_dict, 'pretrained.')
    if size is None:
        raise CheckpointError('cannot tell the Depth Anything V2 preset: no pretrained.cls_token '
                              '(not a DA-V2 file?); pass the preset')
    embed_dim, depth = size
    matches = [p for p in DAV2_PRESETS if PRESETS[p].embed_dim == embed_dim]
    if len(matches) > 1:
        matches = [p for p in matches if PRESETS[p].depth == depth]
    if len(matches) == 1:
        return matches[0]
    known = ', '.join(f'{p} {PRESETS[p].embed_dim}x{PRESETS[p].depth}' for p in DAV2_PRESETS)
    kind = 'matches several' if matches else 'matches no'
    raise CheckpointError(f'cannot tell the Depth Anything V2 preset: token width {embed_dim} '
                          f'and {depth} blocks {kind} preset (width x blocks: {known}); pass '
                          f'the preset')


def _dav2_custom_sizes(state_dict: Mapping[str, Tensor]) -> dict[str, object] | None:
    """``custom`` config sizes read from a DA-V2-layout state dict whose width is no preset's.

    None when the token width is a preset's: such a file is that preset (a truncated one is
    then refused key by key, never read as a smaller custom model).
    """
    token = state_dict.get('pretrained.cls_token')
    if token is None or token.dim() == 0:
        return None
    embed_dim = int(token.shape[-1])
    if any(PRESETS[p].embed_dim == embed_dim for p in DAV2_PRESETS):
        return None
    blocks = {int(m.group(1)) for k in state_dict
              if (m := re.match(r'pretrained\.blocks\.(\d+)\.', k))}
    projects = [state_dict.get(f'depth_head.projects.{i}.weight') for i in range(4)]
    layer_rn = state_dict.get('depth_head.scratch.layer1_rn.weight')
    if not blocks or any(p is None for p in projects) or layer_rn is None:
        return None
    return {'embed_dim': embed_dim, 'depth': max(blocks) + 1, 'features': int(layer_rn.shape[0]),
            'out_channels': tuple(int(p.shape[0]) for p in projects)}


def depth_anything_v2_from_state_dict(state_dict: Mapping[str, Tensor],
                                      preset: str | None = None,
                                      max_depth_m: float | None = None,
                                      device: torch.device | str | None = None,
                                      dtype: torch.dtype | None = None,
                                      source: str = 'state dict') -> DepthAnythingV2:
    """Build a Depth Anything V2 model from an official state dict, strictly, in eval mode.

    Args:
        state_dict: From :func:`load_official_state_dict` (``pretrained.*``, ``depth_head.*``).
        preset: 'vits', 'vitb', 'vitl', 'vitg'; None: told from the shapes
            (:func:`infer_depth_anything_v2_preset`), or, for a token width of no preset, a
            ``custom`` config of the file's sizes (``DepthAnythingV2Config``: the same layout,
            ``embed_dim / 64`` heads).
        max_depth_m: The metric model's ``max_depth`` [m] (20 Hypersim, 80 Virtual KITTI) or
            None for the relative model: the keys cannot tell them apart, the caller must.
        device: Where to put the model (default CPU).
        dtype: Floating dtype of the parameters (default: as stored).
        source: What ``state_dict`` came from, for error messages (e.g. the path).

    Raises:
        CheckpointError: Unknown preset, or missing / unexpected / wrongly shaped keys (a few of
            each named, then a count).
    """
    custom = _dav2_custom_sizes(state_dict) if preset in (None, 'custom') else None
    if custom is not None:
        preset = 'custom'
    elif preset is None:
        try:
            preset = infer_depth_anything_v2_preset(state_dict)
        except CheckpointError as exc:
            raise CheckpointError(f'{source}: {exc}') from None
    try:
        # Registers and their interpolation settings follow the file, as for our own import.
        config = DepthAnythingV2Config(preset=preset, max_depth_m=max_depth_m,
                                       **official_encoder_settings(state_dict), **(custom or {}))
    except ValueError as exc:
        raise CheckpointError(f'{source}: {exc}') from None
    model = create_depth_anything_v2(config, device='meta')
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    problems = _key_problems(expected, {k: list(v.shape) for k, v in state_dict.items()})
    if problems:
        hint = (' (a use_clstoken head: no released model has one, not supported)'
                if any(k.startswith('depth_head.readout_projects.') for k in state_dict) else '')
        raise CheckpointError(f'{source}: weights do not match a Depth Anything V2 {preset!r} '
                              f'model: ' + '; '.join(problems) + hint)
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    model.to(device=device or 'cpu', dtype=dtype)
    return model.eval()


def load_depth_anything_v2(path: PathLike, preset: str | None = None,
                           max_depth_m: float | None = None,
                           device: torch.device | str | None = None,
                           dtype: torch.dtype | None = None) -> DepthAnythingV2:
    """Load an official Depth Anything V2 file as the model itself (e.g. a teacher), strictly.

    ``.pth`` files are read with ``weights_only=True`` (:func:`load_official_state_dict`).

    Args:
        path: ``depth_anything_v2_vit*.pth`` (relative) or
            ``depth_anything_v2_metric_{hypersim,vkitti}_vit*.pth`` (metric), or a
            ``.safetensors`` file with the same keys.
        preset: None: told from the tensor shapes.
        max_depth_m: Must be given for a metric file (20 Hypersim, 80 Virtual KITTI) [m] and
            None for a relative one: the keys are the same.
        device: Where to put the model (default CPU).
        dtype: Floating dtype of the parameters (default: as stored).

    Raises:
        CheckpointError: Missing, unreadable or refused file, unknown preset, or keys that do not
            match the model (see :func:`depth_anything_v2_from_state_dict`).
    """
    state = load_official_state_dict(path)
    return depth_anything_v2_from_state_dict(state, preset, max_depth_m, device, dtype,
                                             source=str(path))
