"""The training pipeline end to end on tiny configs (CPU): loss, checkpoints, resume, DDP."""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import asdict, fields, replace

import pytest
import torch

from metric_solver_ros.checkpoint import load_checkpoint, read_checkpoint_metadata
from metric_solver_ros.commands import train as command
from metric_solver_ros.model import create_model, get_config
from metric_solver_ros.train import (
    EMA,
    autocast_for,
    configure_optimizer,
    normalized_images,
    optimizer_step,
    sample_anchors,
    train,
    training_pool,
)
from metric_solver_ros.train_config import (
    TrainConfig,
    config_fields,
    get_lr,
    load_config,
    overrides_from_args,
    schedule_position,
)
from metric_solver_ros.train_data import StepBatchSampler, train_batches
from metric_solver_ros.train_state import check_resumable, init_model, param_digest

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = REPO / 'config' / 'train_smoke.yaml'


def test_autocast_choice_per_device():
    cpu = torch.device('cpu')
    assert [autocast_for(amp, cpu)[0] for amp in ('auto', 'bf16', 'off')] == [False, True, False]
    if torch.cuda.is_available():  # auto: bf16 only with bf16 hardware (Ampere on)
        cuda = torch.device('cuda')
        native = torch.cuda.get_device_capability(cuda)[0] >= 8
        assert autocast_for('auto', cuda)[0] == native


def test_sample_anchors_are_reproducible_per_step_and_from_the_pool():
    cfg = TrainConfig()
    pool_m = torch.tensor(create_model('tiny').config.anchor_pool_m)
    first = sample_anchors(cfg, pool_m, 64, step=7, micro=1, rank=2)
    assert torch.equal(first, sample_anchors(cfg, pool_m, 64, step=7, micro=1, rank=2))
    assert set(first.tolist()) <= set(pool_m.tolist()) and len(set(first.tolist())) > 3
    for other in ({'step': 8, 'micro': 1, 'rank': 2}, {'step': 7, 'micro': 0, 'rank': 2},
                  {'step': 7, 'micro': 1, 'rank': 3}):
        assert not torch.equal(first, sample_anchors(cfg, pool_m, 64, **other))
    fixed = TrainConfig(anchor_sampling='fixed', fixed_anchor_m=4.0)
    assert sample_anchors(fixed, pool_m, 3, step=0).tolist() == [4.0, 4.0, 4.0]


def test_anchor_max_keeps_the_pool_anchors_up_to_it():
    pool_m = torch.tensor(create_model('tiny').config.anchor_pool_m)
    capped = TrainConfig(anchor_max_m=20.0)
    assert training_pool(capped, pool_m).tolist() == [0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 20.0]
    drawn = sample_anchors(capped, pool_m, 256, step=3)
    assert set(drawn.tolist()) == {0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 20.0}
    assert torch.equal(training_pool(TrainConfig(), pool_m), pool_m)  # 0: the whole pool
    with pytest.raises(ValueError, match='below every pool anchor'):
        training_pool(TrainConfig(anchor_max_m=0.3), pool_m)
    with pytest.raises(ValueError, match='anchor_max_m'):
        TrainConfig(anchor_max_m=-1.0)


def test_normalized_images_scales_uint8_and_takes_floats_as_they_are():
    mean = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)
    as_uint8 = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    as_float = torch.ones(1, 3, 2, 2)
    expected = torch.tensor([1.0, 3.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    for images in (as_uint8, as_float):
        assert torch.allclose(normalized_images(images, torch.device('cpu'), mean, std), expected)


def test_optimizer_step_clips_steps_clears_and_updates_the_ema():
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.weight.detach().clone()
    (model(torch.ones(1, 3)) * 100.0).sum().backward()  # gradient norm 100 * sqrt(4) = 200
    norm = optimizer_step(model, optimizer, TrainConfig(grad_clip=1.0), ema, step=100)
    assert float(norm) == pytest.approx(200.0)
    assert model.weight.grad is None
    # SGD at lr 1 moved each weight by its clipped gradient: 100 / 200 = 0.5
    assert torch.allclose(before - model.weight.detach(), torch.full((1, 3), 0.5))
    # EMA decay min(0.5, 101 / 110) = 0.5: halfway between the old and the new weights
    assert torch.allclose(ema.model.weight, before - 0.25)


def _smoke(tmp_path: pathlib.Path, name: str, **overrides) -> TrainConfig:
    """The smoke config (0.3 M parameters, 56x56, batch 2) writing to ``tmp_path / name``."""
    return load_config(SMOKE, {'out_dir': str(tmp_path / name), **overrides})


def _log(out_dir: pathlib.Path, kind: str) -> list[dict]:
    lines = (out_dir / 'log.jsonl').read_text().splitlines()
    return [r for r in map(json.loads, lines) if r['kind'] == kind]


def test_compiled_training_runs_and_saves_the_plain_model(tmp_path):
    # compile: true (torch.compile of the training model; ~1 min of compiling on this CPU cold)
    cfg = _smoke(tmp_path, 'compiled', data=[{'source': 'synthetic', 'kind': 'mixed',
                                              'length': 2}],
                 anchor_sampling='fixed', fixed_anchor_m=10.0, max_steps=8, compile=True,
                 eval_frames=0)
    summary = train(cfg)
    losses = [loss for _, loss in summary['losses']]
    assert summary['step'] == 8 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    # saved without torch.compile's wrapper prefixes: loads strictly into a plain model
    model = load_checkpoint(pathlib.Path(cfg.out_dir) / 'ckpt.safetensors')
    assert not any(key.startswith('_orig_mod') for key in model.state_dict())


def test_smoke_run_loss_falls_and_writes_a_loadable_checkpoint(tmp_path):
    # A fixed batch (2 scenes, batch 2) and a fixed anchor: the loss must fall reliably.
    cfg = _smoke(tmp_path, 'fixed', data=[{'source': 'synthetic', 'kind': 'mixed', 'length': 2}],
                 anchor_sampling='fixed', fixed_anchor_m=10.0, max_steps=20)
    summary = train(cfg)
    assert summary['step'] == 20 and summary['stopped_by'] == 'max_steps'
    losses = [loss for _, loss in summary['losses']]
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
    # The log holds the same losses, and the eval metrics of both scene kinds.
    out = pathlib.Path(cfg.out_dir)
    assert [r['loss'] for r in _log(out, 'train')] == pytest.approx(losses)
    evals = _log(out, 'eval')
    assert [r['step'] for r in evals] == [20]
    for kind in ('indoor', 'outdoor'):
        metrics = summary['metrics'][kind]
        assert 0.0 <= metrics['delta1'] <= 1.0 and metrics['abs_rel'] >= 0.0
        assert metrics['rmse'] >= 0.0 and 0.0 <= metrics['mask_accuracy'] <= 1.0
        assert evals[0][kind]['delta1'] == metrics['delta1']
    assert summary['metrics']['indoor']['anchor_m'] == 10.0
    assert summary['metrics']['outdoor']['cap_m'] == 80.0
    # The checkpoint is ours: config inside, loads strictly, holds the trained weights.
    model = load_checkpoint(out / 'ckpt.safetensors')
    assert model.config == get_config('tiny', **load_config(SMOKE).model)
    meta = read_checkpoint_metadata(out / 'ckpt.safetensors')
    assert meta['train_step'] == '20'
    assert json.loads(meta['train_config'])['max_steps'] == 20
    assert json.loads(meta['eval_metrics'])['indoor']['delta1'] == metrics_of(summary, 'indoor')
    state = torch.load(out / 'train_state.pt', weights_only=True)
    assert state['step'] == 20
    # Resume: the step counter continues from 20.
    resumed = train(_smoke(tmp_path, 'fixed',
                           data=[{'source': 'synthetic', 'kind': 'mixed', 'length': 2}],
                           anchor_sampling='fixed', fixed_anchor_m=10.0, max_steps=23))
    assert resumed['step'] == 23
    assert [s for s, _ in resumed['losses']] == [21, 22, 23]
    assert read_checkpoint_metadata(out / 'ckpt.safetensors')['train_step'] == '23'
    assert [r['step'] for r in _log(out, 'start')] == [0, 20]


def metrics_of(summary: dict, kind: str) -> float:
    return summary['metrics'][kind]['delta1']


def test_resume_equals_an_uninterrupted_run(tmp_path):
    # Random anchors, endless synthetic data, EMA: everything that resume must restore.
    common = {'max_steps': 8, 'lr_decay_steps': 8, 'ema_decay': 0.9, 'eval_frames': 0,
              'log_interval': 4}
    train(_smoke(tmp_path, 'pieces', **{**common, 'max_steps': 5}))
    pieces = train(_smoke(tmp_path, 'pieces', **common))
    whole = train(_smoke(tmp_path, 'whole', **common))
    assert pieces['step'] == whole['step'] == 8
    for name in ('ckpt.safetensors', 'ckpt_raw.safetensors'):
        a = load_checkpoint(tmp_path / 'pieces' / name)
        b = load_checkpoint(tmp_path / 'whole' / name)
        assert param_digest(a) == param_digest(b), name
    ema = load_checkpoint(tmp_path / 'whole' / 'ckpt.safetensors')
    raw = load_checkpoint(tmp_path / 'whole' / 'ckpt_raw.safetensors')
    assert param_digest(ema) != param_digest(raw)  # the EMA is what ckpt.safetensors holds


def test_resume_refuses_a_different_run_and_keeps_new_hyperparameters(tmp_path):
    common = {'max_steps': 2, 'eval_frames': 0, 'log_interval': 1}
    train(_smoke(tmp_path, 'run', **common))
    # Another starting point for the same out_dir: resuming would silently train the old weights.
    other = _smoke(tmp_path, 'run', **{**common, 'max_steps': 3,
                                       'init_from': str(tmp_path / 'run' / 'ckpt.safetensors')})
    with pytest.raises(ValueError, match='init_from'):
        train(other)
    # Optimizer settings are this invocation's, not the saved optimizer's.
    resumed = _smoke(tmp_path, 'run', **{**common, 'max_steps': 3, 'head_lr_mult': 2.0,
                                         'weight_decay': 0.01, 'beta2': 0.95})
    assert train(resumed)['step'] == 3
    state = torch.load(tmp_path / 'run' / 'train_state.pt', weights_only=True)
    groups = {g['name']: g for g in state['optimizer']['param_groups']}
    assert groups['heads_decay']['lr_mult'] == 2.0 and groups['encoder_decay']['lr_mult'] == 1.0
    assert groups['heads_decay']['weight_decay'] == 0.01
    assert groups['heads_no_decay']['weight_decay'] == 0.0
    assert tuple(groups['encoder_no_decay']['betas']) == (resumed.beta1, 0.95)


def test_time_budget_stops_cleanly_and_saves(tmp_path):
    cfg = _smoke(tmp_path, 'budget', max_steps=100_000, time_budget_s=1.0, eval_frames=0,
                 log_interval=1000, schedule_by_time=True)
    summary = train(cfg)
    assert summary['stopped_by'] == 'time_budget'
    assert 0 < summary['step'] < 100_000
    assert summary['elapsed_s'] >= 1.0
    meta = read_checkpoint_metadata(tmp_path / 'budget' / 'ckpt.safetensors')
    assert int(meta['train_step']) == summary['step']
    assert _log(tmp_path / 'budget', 'train')[-1]['step'] == summary['step']
    # The schedule followed the clock: the last lr is near min_lr although few steps ran.
    assert _log(tmp_path / 'budget', 'train')[-1]['lr'] < cfg.min_lr + 0.2 * (cfg.lr - cfg.min_lr)


@pytest.mark.parametrize('model', [{'far_head': False}, {'mask_head': False}])
def test_ablation_configs_train(tmp_path, model):
    cfg = _smoke(tmp_path, 'ablation', max_steps=2, eval_frames=1, anchor_sampling='fixed',
                 fixed_anchor_m=80.0, model=model)
    summary = train(cfg)
    assert summary['step'] == 2 and all(math.isfinite(v) for _, v in summary['losses'])
    loaded = load_checkpoint(tmp_path / 'ablation' / 'ckpt.safetensors')
    for key, value in model.items():
        assert getattr(loaded.config, key) is value
    assert summary['metrics']['outdoor']['delta1'] is not None


def test_rgbd_folder_and_mixed_sources_through_dataloader_workers(tmp_path):
    from metric_solver_ros.data import render_scene, write_rgbd_folder

    samples = [render_scene('indoor', seed, 70, 98) for seed in range(3)]
    write_rgbd_folder(tmp_path / 'folder', samples, depth_format='npy')
    folder = {'source': 'rgbd_folder', 'root': str(tmp_path / 'folder')}
    only = train(_smoke(tmp_path, 'folder', data=[folder], max_steps=3, eval_frames=0,
                        num_workers=1))
    assert only['step'] == 3 and all(math.isfinite(v) for _, v in only['losses'])
    mixed = train(_smoke(tmp_path, 'mixed', max_steps=2, eval_frames=0, num_workers=1,
                         data=[{**folder, 'weight': 3.0},
                               {'source': 'synthetic', 'kind': 'outdoor', 'weight': 1.0}]))
    assert mixed['step'] == 2 and all(math.isfinite(v) for _, v in mixed['losses'])


def test_scene_workers_give_the_same_batches(tmp_path):
    def first_batches(scene_workers: int, start: int) -> list[dict[str, torch.Tensor]]:
        cfg = _smoke(tmp_path, 'run', batch_size=3, scene_workers=scene_workers)
        batches = train_batches(cfg, rank=0, world=1, device=torch.device('cpu'), start=start)
        return [next(batches) for _ in range(2)]

    for start in (0, 5):  # from the beginning, and resumed at local batch 5
        inline, parallel = first_batches(0, start), first_batches(2, start)
        for a, b in zip(inline, parallel, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.equal(first_batches(0, 0)[0]['image'], first_batches(0, 5)[0]['image'])
    with pytest.raises(ValueError, match='worker counts'):
        _smoke(tmp_path, 'bad', scene_workers=-1)


def test_a_fourth_loss_weight_adds_the_silog_term(tmp_path):
    cfg = _smoke(tmp_path, 'silog', loss_weights=[1.0, 1.0, 0.05, 0.1], max_steps=2,
                 log_interval=1, eval_frames=0)
    train(cfg)
    records = _log(tmp_path / 'silog', 'train')
    assert records and all(r['loss_silog'] > 0 for r in records)
    assert all(r['loss'] > r['loss_sn'] + r['loss_tf'] + 0.05 * r['loss_mask'] for r in records)
    plain = _smoke(tmp_path, 'plain', max_steps=1, log_interval=1, eval_frames=0)
    train(plain)
    assert _log(tmp_path / 'plain', 'train')[0]['loss_silog'] == 0.0
    with pytest.raises(ValueError, match='3 to 5 numbers'):
        _smoke(tmp_path, 'bad', loss_weights=[1.0, 1.0])


def test_ema_moves_each_parameter_by_its_ramped_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.fill_(2.0)
    ema.update(model, step=0)  # ramp: decay min(0.9, 1 / 10) = 0.1, i.e. 90 % of the way
    for e, s, p in zip(ema.model.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(e, s + 0.9 * (p - s))
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)  # buffers copied
    before = [e.clone() for e in ema.model.parameters()]
    ema.update(model, step=1000)  # past the ramp: 0.9
    for e, b, p in zip(ema.model.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, b + 0.1 * (p - b))


def test_get_lr_warmup_cosine_and_floor():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=9, max_steps=109)
    assert get_lr(0, cfg) == pytest.approx(1e-4)  # (0 + 1) / (9 + 1) of the peak
    assert get_lr(4, cfg) == pytest.approx(5e-4)
    assert get_lr(9, cfg) == pytest.approx(1e-3)  # end of warmup: the peak
    assert get_lr(59, cfg) == pytest.approx(5.5e-4)  # half-way down the cosine
    assert get_lr(109, cfg) == pytest.approx(1e-4)
    assert get_lr(10_000, cfg) == pytest.approx(1e-4)
    values = [get_lr(i, cfg) for i in range(9, 110)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert get_lr(59, TrainConfig(lr=1e-3, min_lr=0.0, warmup_steps=9, max_steps=1000,
                                  lr_decay_steps=109)) == pytest.approx(5e-4)
    # The position in the schedule: the step, or the budget's share when that is ahead.
    assert schedule_position(30, 50.0, cfg) == 30.0
    by_time = TrainConfig(max_steps=1000, time_budget_s=100.0, schedule_by_time=True)
    assert schedule_position(30, 50.0, by_time) == 500.0  # half the budget: half the steps
    assert schedule_position(700, 50.0, by_time) == 700.0
    assert schedule_position(30, 50.0, replace(by_time, time_budget_s=0.0)) == 30.0


def test_optimizer_groups_head_lr_and_no_decay():
    cfg = TrainConfig(lr=1e-4, head_lr_mult=10.0, weight_decay=0.05)
    model = create_model(get_config('tiny', **load_config(SMOKE).model))
    model.pretrained.mask_token.requires_grad_(False)
    optimizer = configure_optimizer(model, cfg, 'cpu')
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g['name']: g for g in optimizer.param_groups}
    assert set(groups) == {'encoder_decay', 'encoder_no_decay', 'heads_decay', 'heads_no_decay'}
    assert groups['encoder_decay']['lr_mult'] == 1.0 and groups['heads_decay']['lr_mult'] == 10.0
    no_decay = {names[id(p)] for g in optimizer.param_groups if g['weight_decay'] == 0.0
                for p in g['params']}
    decay = {names[id(p)] for g in optimizer.param_groups if g['weight_decay'] > 0.0
             for p in g['params']}
    assert {'pretrained.pos_embed', 'pretrained.cls_token', 'anchor_pool.embeddings',
            'pretrained.norm.weight', 'pretrained.blocks.0.ls1.gamma',
            'near_head.projects.0.bias'} <= no_decay
    assert {'pretrained.patch_embed.proj.weight', 'pretrained.blocks.0.attn.qkv.weight',
            'near_head.projects.0.weight', 'far_head.scratch.output_conv1.weight'} <= decay
    assert all(not n.startswith('pretrained.') for n in
               (names[id(p)] for g in ('heads_decay', 'heads_no_decay')
                for p in groups[g]['params']))
    everything = decay | no_decay
    assert 'pretrained.mask_token' not in everything
    assert everything == {n for n, p in model.named_parameters() if p.requires_grad}


def test_step_batch_sampler_shards_and_resumes():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    rank0 = take(StepBatchSampler(10, 3, 0, 2, seed=1, shuffle=True), 4)
    rank1 = take(StepBatchSampler(10, 3, 1, 2, seed=1, shuffle=True), 4)
    flat = [item for batch in rank0 + rank1 for item in batch]
    assert len(set(flat)) == len(flat) == 24  # disjoint (epoch, index) items over ranks
    epoch0 = sorted(index for epoch, index in flat if epoch == 0)
    assert epoch0 == list(range(10))  # each epoch is a permutation of the dataset
    assert take(StepBatchSampler(10, 3, 1, 2, seed=1, shuffle=True, start=2), 2) == rank1[2:]
    assert take(StepBatchSampler(5, 2, 0, 1, seed=0, shuffle=False), 3) == [
        [(0, 0), (0, 1)], [(0, 2), (0, 3)], [(0, 4), (1, 0)]]


def test_config_yaml_overrides_and_cli(tmp_path):
    cfg = load_config(SMOKE, {'lr': 5e-4, 'model': {'depth': 5}, 'image_size': [28, 42]})
    assert cfg.lr == 5e-4 and cfg.image_size == (28, 42)
    assert cfg.model['depth'] == 5 and cfg.model['embed_dim'] == 48  # merged, not replaced
    with pytest.raises(ValueError, match='unknown train config keys: nope'):
        load_config(SMOKE, {'nope': 1})
    with pytest.raises(ValueError, match='anchor_sampling'):
        load_config(None, {'anchor_sampling': 'random'})
    with pytest.raises(ValueError, match='data source'):
        load_config(None, {'data': [{'source': 'kitti'}]})
    # The CLI options are exactly the config fields, parsed as YAML.
    assert [n for n, _ in config_fields()] == [f.name for f in fields(TrainConfig)]
    assert all(help_text for _, help_text in config_fields())
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(['--config', str(SMOKE), '--max_steps', '7', '--ema_decay=0.99',
                              '--model', '{anchor_dim: 4}', '--resume', 'false'])
    assert overrides_from_args(args) == {
        'max_steps': 7, 'ema_decay': 0.99, 'model': {'anchor_dim': 4}, 'resume': False}


def test_init_from_checkpoint_and_official_dinov2(tmp_path):
    model_overrides = load_config(SMOKE).model
    source = create_model(get_config('tiny', **model_overrides))
    from metric_solver_ros.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / 'src.safetensors', source)
    fine, origin = init_model(load_config(SMOKE, {'init_from': str(tmp_path / 'src.safetensors'),
                                                  'model': {'input_size': [112, 112]}}))
    assert 'Metric-Solver checkpoint' in origin and fine.config.input_size == (112, 112)
    fine_state = fine.state_dict()
    assert all(torch.equal(v, fine_state[k]) for k, v in source.state_dict().items())
    # An official DINOv2 file (plain encoder keys) initialises the encoder only.
    encoder = {k: v.clone() for k, v in source.pretrained.state_dict().items()}
    torch.save(encoder, tmp_path / 'dinov2_tiny.pth')
    model, origin = init_model(load_config(SMOKE, {'init_from': str(tmp_path / 'dinov2_tiny.pth'),
                                                   'seed': 5}))
    assert origin.startswith('DINOv2 weights')
    got = model.pretrained.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in encoder.items())
    with pytest.raises(ValueError, match=r'dinov2_tiny.pth holds a custom encoder \(embed 48, '
                       r'depth 4\); --preset is tiny resized by --model \(embed 64, depth 4\): '
                       r'use --model with embed_dim 48 and depth 4 or another file$'):
        init_model(load_config(SMOKE, {'init_from': str(tmp_path / 'dinov2_tiny.pth'),
                                       'model': {'embed_dim': 64}}))
    with pytest.raises(FileNotFoundError):
        init_model(load_config(SMOKE, {'init_from': str(tmp_path / 'missing.pth')}))


def test_init_from_an_official_file_of_another_preset_is_one_line(tmp_path, capsys):
    from official_weights import official_dinov2_vits_shapes, random_state

    from metric_solver_ros.cli import main

    path = tmp_path / 'dinov2_vits14_pretrain.pth'
    torch.save(random_state(official_dinov2_vits_shapes(), seed=0), path)
    for preset, size in (('tiny', 'embed 192, depth 12'), ('vitb', 'embed 768, depth 12')):
        message = (f'{path} holds a vits encoder (embed 384, depth 12); --preset is {preset} '
                   f'({size}): use --preset vits or another file')
        with pytest.raises(ValueError) as error:
            init_model(TrainConfig(init_from=str(path), preset=preset))
        assert str(error.value) == message
        # The CLI: one line, no key lists, no traceback.
        assert main(['train', '--init_from', str(path), '--preset', preset,
                     '--out_dir', str(tmp_path / preset)]) == 2
        assert capsys.readouterr().err == f'metric-solver train: error: {message}\n'
    model, origin = init_model(TrainConfig(init_from=str(path), preset='vits'))  # it fits
    assert origin.startswith('DINOv2 weights') and model.config.embed_dim == 384


def test_a_new_model_infers_at_the_training_resolution(tmp_path):
    # Without model.input_size, a new model (scratch or official weights) takes image_size:
    # inference then shows the network the focal lengths [px] it was trained on.
    model_overrides = {k: v for k, v in load_config(SMOKE).model.items() if k != 'input_size'}
    cfg = replace(load_config(SMOKE, {'image_size': [56, 84]}), model=model_overrides)
    model, _ = init_model(cfg)
    assert model.config.input_size == (56, 84)
    assert get_config('tiny', **model_overrides).input_size != (56, 84)
    # A converted file (never trained) is a new model too; a trained one keeps its own.
    from metric_solver_ros.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / 'converted.safetensors', model, {'source_kind': 'dinov2'})
    save_checkpoint(tmp_path / 'trained.safetensors', model, {'train_step': '5'})
    for name, want in (('converted', (56, 112)), ('trained', (56, 84))):
        cfg = replace(load_config(SMOKE, {'image_size': [56, 112]}), model={},
                      init_from=str(tmp_path / f'{name}.safetensors'))
        assert init_model(cfg)[0].config.input_size == want, name


def test_image_size_must_be_patch_multiples():
    with pytest.raises(ValueError, match=r'image_size \(200, 250\) must be multiples of the patch'):
        init_model(load_config(SMOKE, {'image_size': [200, 250]}))


def test_resume_check_compares_meanings_not_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(SMOKE, {'init_from': 'model.safetensors',
                              'data': [{'source': 'synthetic', 'kind': 'mixed', 'weight': 1}]})
    saved = asdict(replace(cfg, init_from=str(tmp_path / 'model.safetensors'),
                           data=[{'source': 'synthetic', 'kind': 'mixed', 'weight': 1.0}]))
    check_resumable(saved, cfg, tmp_path)  # the same run: no error
    with pytest.raises(ValueError, match='data:'):
        check_resumable({**saved, 'data': [{'source': 'synthetic', 'kind': 'indoor'}]}, cfg,
                        tmp_path)


def test_ddp_two_processes_stay_identical(tmp_path):
    # Gradient accumulation, and a learning rate that follows the clock: the ranks' clocks
    # differ, and the weights stay identical only if every rank uses the same learning rate.
    out = tmp_path / 'ddp'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '-m', 'metric_solver_ros.train', '--config', str(SMOKE), '--out_dir', str(out),
           '--max_steps', '100000', '--time_budget_s', '4', '--schedule_by_time', 'true',
           '--grad_accum_steps', '2', '--eval_frames', '0', '--device', 'cpu']
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ends = re.findall(r'\[rank (\d)\] step (\d+) param_digest ([0-9a-f]{64})', result.stdout)
    assert sorted(rank for rank, _, _ in ends) == ['0', '1'], result.stdout[-3000:]
    (_, step_a, digest_a), (_, step_b, digest_b) = ends
    assert step_a == step_b and int(step_a) >= 2
    assert digest_a == digest_b
    assert param_digest(load_checkpoint(out / 'ckpt.safetensors')) == digest_a
    start = _log(out, 'start')
    assert len(start) == 1 and start[0]['world'] == 2  # only rank 0 logs
    assert _log(out, 'train')[-1]['step'] == int(step_a)


BLOCK_IMPORTS = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'cv2', 'h5py', 'rclpy', 'rosbags', 'matplotlib'}:
            raise ImportError(f'{name} is not on the GPU machine')
sys.meta_path.insert(0, _Block())
'''


def test_synthetic_training_needs_only_torch_numpy_safetensors_yaml(tmp_path):
    # tools/gpu_train.sh carries only numpy, safetensors and PyYAML to the GPU machine.
    code = BLOCK_IMPORTS + (
        'from metric_solver_ros.train import main\n'
        f'sys.exit(main(["--config", {str(SMOKE)!r}, "--out_dir", {str(tmp_path / "run")!r}, '
        '"--max_steps", "2", "--eval_frames", "0"]))\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / 'run' / 'ckpt.safetensors').is_file()


def test_gpu_train_script_runs_end_to_end_on_the_cpu(tmp_path):
    # The script a GPU session runs once: smoke run, budgeted run, float16 weights into $OUT.
    out = tmp_path / 'out'
    env = {**os.environ, 'OUT': str(out), 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1',
           'GPU_WHEELS': str(tmp_path / 'no_wheels'),  # the cp312 kit is not for this Python
           'BENCH': 'tiny', 'BENCH_DEVICE': 'cpu', 'BENCH_ARGS': '--warmup 1 --iters 1',
           'PROFILE': '1', 'PROFILE_DEVICE': 'cpu', 'PROFILE_BATCH': '2',
           'PROFILE_ARGS': '--size 56 70 --repeat 1'}
    result = subprocess.run(
        ['bash', 'tools/gpu_train.sh', '1', '--batch_size', '2', '--image_size', '[56,70]',
         '--num_threads', '1'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # a passing smoke run's tail joins env.txt (the device returns 8 files at most)
    assert not (out / 'smoke.txt').exists()
    env_txt = (out / 'env.txt').read_text()
    assert 'python' in env_txt and 'smoke run passed' in env_txt
    assert 'finished at step' in env_txt.split('smoke run passed')[1]
    assert 'time_budget' in (out / 'train.txt').read_text()
    bench = [json.loads(line) for line in (out / 'bench.jsonl').read_text().splitlines()]
    # auto precision, the same with --cuda-graphs (a no-op on the CPU), fp32
    assert [(b['preset'], b['device'], b['precision'], b['cuda_graphs']) for b in bench] == [
        ('tiny', 'cpu', 'float32', False)] * 3
    assert all(b['single_ms'] > 0 for b in bench)
    assert 'passed' in (out / 'pytest.txt').read_text()
    profile = json.loads((out / 'train_step.jsonl').read_text())
    assert profile['batch_size'] == 2 and profile['workers'] == 12 and profile['ms']['step'] > 0
    model = load_checkpoint(out / 'ckpt_fp16.safetensors')
    # a new model infers at its training resolution (not the preset's 266x350)
    assert model.config.preset == 'tiny' and model.config.input_size == (56, 70)
    assert int(read_checkpoint_metadata(out / 'ckpt_fp16.safetensors')['train_step']) >= 1
    assert any(r['kind'] == 'train' for r in map(json.loads, (out / 'log.jsonl').open()))


def test_gpu_train_script_ab_runs_two_trainings_at_once(tmp_path):
    # AB_ARGS: a second run with those options beside the first, same budget and data.
    out = tmp_path / 'out'
    env = {**os.environ, 'OUT': str(out), 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1',
           'GPU_WHEELS': str(tmp_path / 'no_wheels'), 'GPU_TESTS': '0',
           'AB_ARGS': '--loss_weights [1.0,1.0,0.05,0.1]'}
    result = subprocess.run(
        ['bash', 'tools/gpu_train.sh', '1', '--batch_size', '2', '--image_size', '[56,70]',
         '--num_threads', '1', '--log_interval', '1'], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plain, silog = (out / 'train.txt').read_text(), (out / 'train_b.txt').read_text()
    assert 'time_budget' in plain and 'time_budget' in silog
    assert ' silog ' not in plain and ' silog ' in silog  # the B run has the 4th loss term
    for name in ('ckpt_fp16.safetensors', 'ckpt_b_fp16.safetensors'):
        config = json.loads(read_checkpoint_metadata(out / name)['train_config'])
        assert len(config['loss_weights']) == (4 if '_b_' in name else 3)
    assert not (out / 'log.jsonl').exists()  # left out: 8 files at most come back


def test_a_fifth_loss_weight_decodes_each_image_at_two_anchors_and_adds_consistency(tmp_path):
    cfg = _smoke(tmp_path, 'consistency', loss_weights=[1.0, 1.0, 0.05, 0.0, 0.5], max_steps=2,
                 log_interval=1, eval_frames=0)
    pool_m = torch.tensor(create_model('tiny').config.anchor_pool_m)
    paired = sample_anchors(cfg, pool_m, 16, step=3)
    single = sample_anchors(_smoke(tmp_path, 'single'), pool_m, 16, step=3)
    assert paired.shape == (32,) and torch.equal(paired[:16], single)
    assert (paired[:16] != paired[16:]).all()  # a different second anchor for every image
    train(cfg)
    records = _log(tmp_path / 'consistency', 'train')
    assert records and all(r['loss_consistency'] > 0 for r in records)
    assert all(r['loss'] > r['loss_sn'] + r['loss_tf'] + 0.05 * r['loss_mask'] for r in records)
    with pytest.raises(ValueError, match='needs anchor_sampling: pool'):
        _smoke(tmp_path, 'bad', loss_weights=[1.0, 1.0, 0.05, 0.0, 0.5],
               anchor_sampling='fixed')
