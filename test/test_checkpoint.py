"""Checkpoint save / load (safetensors with the config inside) and safe official-file reading."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from metric_solver_ros.checkpoint import (
    CheckpointError,
    default_model_path,
    load_checkpoint,
    load_official_state_dict,
    read_checkpoint_config,
    save_checkpoint,
)
from metric_solver_ros.model import MetricSolverConfig, create_model


def small_config(**overrides) -> MetricSolverConfig:
    fields = dict(preset='custom', embed_dim=32, depth=4, num_heads=2, pos_embed_grid=5,
                  taps=(0, 1, 2, 3), head_features=16, head_out_channels=(8, 16, 16, 16),
                  head_hidden=8, anchor_dim=8, input_size=(28, 42),
                  anchor_pool_m=(0.3, 1.0, 7.5, 50.0))
    fields.update(overrides)
    return MetricSolverConfig(**fields)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(small_config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp('ckpt') / 'model.safetensors'
    save_checkpoint(path, model, metadata={'note': 'unit test'})
    return model, path


def rewrite(src: pathlib.Path, dst: pathlib.Path, tensors=None, metadata=None):
    """Copy a checkpoint with edited tensors / metadata."""
    with safe_open(str(src), framework='pt') as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    if tensors is not None:
        state = tensors(state)
    if metadata is not None:
        meta = metadata(meta)
    save_file(state, str(dst), metadata=meta)
    return dst


def test_save_then_load_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert not loaded.training
    x = torch.randn(1, 3, 28, 42)
    anchors = torch.tensor([0.3, 2.0, 50.0])
    with torch.no_grad():
        want, got = model(x, anchors), loaded(x, anchors)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_metadata_holds_format_version_config_and_extras(saved):
    model, path = saved
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
    assert meta['format'] == 'metric_solver' and meta['format_version'] == '1'
    assert json.loads(meta['config']) == model.config.to_dict()
    assert meta['note'] == 'unit test'
    assert read_checkpoint_config(path) == model.config


def test_load_with_dtype_keeps_the_anchor_pool_in_float32(saved):
    _, path = saved
    loaded = load_checkpoint(path, device='cpu', dtype=torch.bfloat16)
    assert loaded.pretrained.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert loaded.anchor_pool.anchors_m.dtype == torch.float32
    assert loaded.anchor_pool.anchors_m.tolist() == pytest.approx([0.3, 1.0, 7.5, 50.0],
                                                                  rel=1e-7)


def test_reserved_metadata_is_refused(saved, tmp_path):
    model, _ = saved
    with pytest.raises(ValueError, match='reserved'):
        save_checkpoint(tmp_path / 'x.safetensors', model, metadata={'config': '{}'})
    assert not (tmp_path / 'x.safetensors').exists()


def test_truncated_file_is_a_checkpoint_error(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (len(data) // 2, 8, len(data) - 1):
        bad = tmp_path / f'cut{cut}.safetensors'
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(bad.name)):
            load_checkpoint(bad)


def test_garbage_and_missing_files_are_checkpoint_errors(tmp_path):
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'\x00' * 100)
    with pytest.raises(CheckpointError, match='junk.safetensors'):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match='no such'):
        load_checkpoint(tmp_path / 'absent.safetensors')
    with pytest.raises(CheckpointError, match='no such'):
        read_checkpoint_config(tmp_path / 'absent.safetensors')


def test_wrong_shape_is_named(saved, tmp_path):
    _, path = saved
    key = 'near_head.projects.2.weight'

    def widen(state):
        state[key] = torch.zeros(17, *state[key].shape[1:])
        return state

    bad = rewrite(path, tmp_path / 'shape.safetensors', tensors=widen)
    with pytest.raises(CheckpointError, match=r'wrong shapes: near_head\.projects\.2\.weight'):
        load_checkpoint(bad)


def test_missing_and_unexpected_keys_are_listed(saved, tmp_path):
    _, path = saved

    def edit(state):
        del state['pretrained.norm.weight']
        state['extra.weight'] = torch.zeros(2)
        return state

    bad = rewrite(path, tmp_path / 'keys.safetensors', tensors=edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert 'missing keys: pretrained.norm.weight' in str(info.value)
    assert 'unexpected keys: extra.weight' in str(info.value)


@pytest.mark.parametrize('edit, message', [
    (lambda m: {}, 'not a Metric-Solver checkpoint'),
    (lambda m: {**m, 'format_version': '2'}, 'format_version'),
    (lambda m: {k: v for k, v in m.items() if k != 'config'}, 'no model config'),
    (lambda m: {**m, 'config': '{"embed_dim": 3'}, 'invalid model config'),
    (lambda m: {**m, 'config': json.dumps({**json.loads(m['config']), 'depth': 0})},
     'invalid model config'),
])
def test_bad_metadata_is_refused(saved, tmp_path, edit, message):
    _, path = saved
    bad = rewrite(path, tmp_path / 'meta.safetensors', metadata=edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)


def test_default_model_path_is_package_data():
    path = default_model_path()
    assert path.name == 'default.safetensors' and path.parent.name == 'weights'
    assert path.parent.parent == pathlib.Path(__file__).resolve().parents[1] / 'metric_solver_ros'


class _WritesAFile:
    """Unpickling this would create ``self.path``: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'weight': torch.zeros(1), 'payload': _WritesAFile(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match='refused'):
        load_official_state_dict(evil)
    assert not marker.exists()
    # The payload is real: an unrestricted load would have created the file.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_official_state_dict_unwrapping(tmp_path):
    tensors = {'blocks.0.norm1.weight': torch.ones(3), 'cls_token': torch.zeros(1, 1, 3)}
    cases = {
        'raw.pth': tensors,
        'model.pth': {'model': tensors, 'epoch': 3},
        'state.pth': {'state_dict': {f'module.{k}': v for k, v in tensors.items()}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        state = load_official_state_dict(tmp_path / name)
        assert set(state) == set(tensors), name
        assert torch.equal(state['blocks.0.norm1.weight'], torch.ones(3))
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='state dict'):
        load_official_state_dict(tmp_path / 'list.pth')
    (tmp_path / 'broken.pth').write_bytes(b'not a zip')
    with pytest.raises(CheckpointError, match='broken.pth'):
        load_official_state_dict(tmp_path / 'broken.pth')
