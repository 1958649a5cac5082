"""``metric-solver convert`` / ``info`` on files in the official DINOv2 and DA-V2 key layouts."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest
import torch
from official_weights import (
    BLOCKS,
    D,
    dav2_head_reference,
    dav2_vits_state,
    official_dinov2_vits_shapes,
    random_state,
)

from metric_solver_ros.checkpoint import (
    import_depth_anything_v2,
    import_dinov2,
    load_checkpoint,
    read_checkpoint_config,
)
from metric_solver_ros.cli import main
from metric_solver_ros.model import create_model, get_config


@pytest.fixture(scope='module')
def dinov2_file(tmp_path_factory):
    state = random_state(official_dinov2_vits_shapes(), seed=1)
    path = tmp_path_factory.mktemp('official') / 'dinov2_vits14_pretrain.pth'
    torch.save(state, path)
    return path, state


@pytest.fixture(scope='module')
def dav2_file(tmp_path_factory):
    state = dav2_vits_state(encoder_seed=2, head_seed=3)
    path = tmp_path_factory.mktemp('official') / 'depth_anything_v2_vits.pth'
    torch.save(state, path)
    return path, state


def run_cli(args):
    """Run ``metric-solver`` in-process; return (exit code, stdout)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    return code, stdout.getvalue()


@pytest.fixture(scope='module')
def dinov2_converted(dinov2_file, tmp_path_factory):
    path, _ = dinov2_file
    out = tmp_path_factory.mktemp('converted') / 'vits_init.safetensors'
    code, printed = run_cli(['convert', '--from', 'dinov2', str(path), '--preset', 'vits',
                             '--out', str(out)])
    assert code == 0
    return out, printed


@pytest.fixture(scope='module')
def dav2_converted(dav2_file, tmp_path_factory):
    path, _ = dav2_file
    out = tmp_path_factory.mktemp('converted') / 'vits_dav2.safetensors'
    code, printed = run_cli(['convert', '--from', 'dav2', str(path), '--preset', 'vits',
                             '--out', str(out), '--anchor-pool', '0.5', '2', '8',
                             '--input-size', '364', '490'])
    assert code == 0
    return out, printed


def test_convert_dinov2_lands_every_backbone_tensor(dinov2_file, dinov2_converted):
    _, state = dinov2_file
    out, printed = dinov2_converted
    assert f'loaded: {len(state)} tensors, partial: 0, skipped: 0, missing: 0' in printed
    model = load_checkpoint(out)
    encoder = model.pretrained.state_dict()
    for key, value in state.items():
        assert torch.equal(encoder[key], value), key
    assert read_checkpoint_config(out) == get_config('vits')


def test_convert_dav2_loads_encoder_both_heads_and_zeroes_the_anchor_channels(
        dav2_file, dav2_converted):
    _, state = dav2_file
    out, printed = dav2_converted
    assert 'partial  near_head.projects.0.weight' in printed
    assert 'skipped  depth_head.scratch.refinenet4.resConfUnit1.conv1.weight: unused' in printed
    assert 'missing  anchor_pool.embeddings' in printed
    assert 'missing  near_head.mask_conv.weight' in printed
    model = load_checkpoint(out)
    assert model.config.anchor_pool_m == (0.5, 2.0, 8.0)
    assert model.config.input_size == (364, 490)
    sd = model.state_dict()
    for key, value in state.items():
        if key.startswith('pretrained.'):
            assert torch.equal(sd[key], value), key
    for head in ('near_head', 'far_head'):
        for i in range(4):
            weight = sd[f'{head}.projects.{i}.weight']
            assert torch.equal(weight[:, :D], state[f'depth_head.projects.{i}.weight'])
            assert (weight[:, D:] == 0).all()
        for name in ('scratch.refinenet2.resConfUnit1.conv2.weight', 'resize_layers.3.bias',
                     'scratch.output_conv2.2.weight', 'scratch.layer4_rn.weight'):
            assert torch.equal(sd[f'{head}.{name}'], state[f'depth_head.{name}']), name


def test_import_report_of_dav2(dav2_file):
    _, state = dav2_file
    model = create_model('vits', device='meta')
    report = import_depth_anything_v2(model, state)
    assert len(report.partial) == 8  # 4 projections x 2 heads
    assert set(report.skipped) == {k for k in state if 'refinenet4.resConfUnit1' in k}
    assert set(report.missing) == {'anchor_pool.embeddings', 'near_head.mask_conv.weight',
                                   'near_head.mask_conv.bias'}
    n_encoder = sum(k.startswith('pretrained.') for k in state)
    n_head = sum(k.startswith('depth_head.') for k in state)
    assert (n_encoder, n_head) == (175, 64)
    assert len(report.loaded) == n_encoder + 2 * (n_head - 4 - 4)  # minus skipped and partial


def test_imported_heads_compute_dav2s_function_for_every_anchor(dav2_file, dav2_converted):
    _, state = dav2_file
    model = load_checkpoint(dav2_converted[0])
    head_state = {k[len('depth_head.'):]: v for k, v in state.items()
                  if k.startswith('depth_head.')}
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        features = model.encode(x)
        out = model.decode(features, torch.tensor([0.5, 8.0]), (2, 3))
        want = dav2_head_reference(head_state, features, (2, 3), (28, 42))
    for key in ('d_sn_logit', 'd_tf_logit'):
        for i in range(2):
            assert torch.allclose(out[key][i:i + 1], want, atol=1e-4, rtol=1e-4), key


def test_import_reports_shape_mismatches_per_key(dinov2_file):
    _, state = dinov2_file
    model = create_model(get_config('vits', pos_embed_grid=16), device='meta')
    report = import_dinov2(model, state)
    assert report.skipped == {'pos_embed': 'shape [1, 1370, 384] in file, [1, 257, 384] in model'}
    assert report.missing == ['pretrained.pos_embed']
    assert len(report.loaded) == len(state) - 1


def test_wrong_preset_fails_cleanly_and_writes_nothing(dinov2_file, tmp_path, capsys):
    path, _ = dinov2_file
    out = tmp_path / 'tiny.safetensors'
    code = main(['convert', '--from', 'dinov2', str(path), '--preset', 'tiny', '--out', str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert 'no DINOv2 tensor fits' in err and 'wrong --preset' in err
    assert 'shape [384] in file, [192] in model' in err
    assert not out.exists()


def test_convert_refuses_a_file_missing_encoder_blocks(dinov2_file, tmp_path, capsys):
    # Half the blocks absent (a truncated or other file): the encoder would be half random.
    path, state = dinov2_file
    partial = {k: v for k, v in state.items()
               if not any(k.startswith(f'blocks.{i}.') for i in range(6, BLOCKS))}
    torch.save(partial, tmp_path / 'partial.pth')
    out = tmp_path / 'partial.safetensors'
    assert main(['convert', '--from', 'dinov2', str(tmp_path / 'partial.pth'), '--preset', 'vits',
                 '--out', str(out)]) == 2
    assert 'lacks 84 tensors' in capsys.readouterr().err
    assert not out.exists()


def test_convert_builds_a_register_model_for_a_reg_file(dinov2_file, tmp_path):
    # dinov2_vits14_reg4_pretrain.pth: 4 register tokens, and (dinov2/hub/backbones.py)
    # interpolate_offset 0, antialias on: the converted encoder must be that network.
    _, state = dinov2_file
    tokens = torch.randn(1, 4, D)
    torch.save({**state, 'register_tokens': tokens}, tmp_path / 'dinov2_vits14_reg4.pth')
    out = tmp_path / 'reg.safetensors'
    code, printed = run_cli(['convert', '--from', 'dinov2',
                             str(tmp_path / 'dinov2_vits14_reg4.pth'), '--preset', 'vits',
                             '--out', str(out)])
    assert code == 0 and 'with 4 register tokens' in printed
    assert f'loaded: {len(state) + 1} tensors, partial: 0, skipped: 0, missing: 0' in printed
    config = read_checkpoint_config(out)
    assert (config.num_register_tokens, config.interpolate_offset,
            config.interpolate_antialias) == (4, 0.0, True)
    assert torch.equal(load_checkpoint(out).pretrained.register_tokens, tokens)


def test_convert_refuses_a_malicious_pickle(tmp_path, capsys):
    from test_checkpoint import _WritesAFile

    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'cls_token': torch.zeros(1, 1, D), 'x': _WritesAFile(marker)}, evil)
    out = tmp_path / 'out.safetensors'
    assert main(['convert', '--from', 'dinov2', str(evil), '--out', str(out)]) == 2
    assert 'refused' in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_convert_rejects_bad_options(dinov2_file, tmp_path, capsys):
    path, _ = dinov2_file
    out = tmp_path / 'x.safetensors'
    assert main(['convert', '--from', 'dinov2', str(path), '--preset', 'vits', '--out', str(out),
                 '--input-size', '500', '500']) == 2
    assert 'multiples' in capsys.readouterr().err
    assert main(['convert', '--from', 'dinov2', str(path), '--preset', 'nope',
                 '--out', str(out)]) == 2
    assert not out.exists()


def test_info_on_preset_and_checkpoint(dinov2_converted, tmp_path, capsys):
    assert main(['info', 'vitl']) == 0
    printed = capsys.readouterr().out
    assert 'preset vitl' in printed and 'embed_dim: 1024' in printed
    assert re.search(r'encoder\s+304,368,640', printed)
    out, _ = dinov2_converted
    assert main(['info', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'source: dinov2_vits14_pretrain.pth' in printed
    assert 'format_version: 1' in printed and re.search(r'encoder\s+22,056,576', printed)
    assert main(['info', str(pathlib.Path(tmp_path) / 'absent.safetensors')]) == 2
