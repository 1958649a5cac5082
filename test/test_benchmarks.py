"""The node load benchmark runs end to end and does what its options say (a short run).

Timing figures belong to ``benchmarks/RESULTS.md``; this only checks that the benchmark measures
what it claims: answers counted, and with ``--points`` the node really publishes the cloud.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from node_harness import small_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))
from node_load import find_py_spy, profile_summary  # noqa: E402


def test_find_py_spy_prefers_the_interpreters_own_then_path(tmp_path, monkeypatch):
    venv_bin, elsewhere = tmp_path / 'venv' / 'bin', tmp_path / 'elsewhere'
    venv_bin.mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setattr(sys, 'executable', str(venv_bin / 'python'))
    monkeypatch.setenv('PATH', str(elsewhere))
    assert find_py_spy() is None  # --profile then stops before the run, with a clear error
    on_path = elsewhere / 'py-spy'
    on_path.write_text('#!/bin/sh\n')
    on_path.chmod(0o755)
    assert find_py_spy() == str(on_path)
    beside = venv_bin / 'py-spy'
    beside.write_text('#!/bin/sh\n')
    assert find_py_spy() == str(beside)


def test_profile_summary_counts_each_function_once_per_sample_and_drops_generic_frames():
    raw = '\n'.join([
        'thread (1): worker;Thread.run (threading.py:982);work (node.py:1);infer (engine.py:2);'
        'Module._call_impl (torch/nn/modules/module.py:1789);f (m.py:3);f (m.py:3) 3',
        'thread (1): worker;Thread.run (threading.py:982);work (node.py:1);publish (node.py:9) 1',
        'thread (2): MainThread;<module> (node.py:700);_run_code (<frozen runpy>:88);'
        'main (node.py:692) 4',
        'not a sample line',
    ])
    summary = profile_summary(raw)
    assert summary['worker']['samples'] == 4 and summary['MainThread']['samples'] == 4
    assert dict(summary['worker']['top']) == {'work': 1.0, 'infer': 0.75, 'f': 0.75,
                                              'publish': 0.25}  # f twice on a stack: once
    assert dict(summary['MainThread']['top']) == {'main': 1.0}
    assert summary['worker']['top'][0] == ['work', 1.0]  # most first


def test_node_load_counts_answers_clouds_and_node_side(tmp_path):
    checkpoint = small_checkpoint(tmp_path / 'small.safetensors')
    result_path = tmp_path / 'load.json'
    # a domain of its own: the benchmark's node and camera only see each other
    domain = (int(os.environ.get('ROS_DOMAIN_ID', '0')) + 50) % 101 + 1
    try:
        run = subprocess.run(
            [sys.executable, str(REPO / 'benchmarks' / 'node_load.py'), '--checkpoint',
             str(checkpoint), '--device', 'cpu', '--rate', '5', '--warmup', '2', '--duration',
             '3', '--windows', '1', '--points', '-p', 'points_stride:=2', '--profile',
             '--json', str(result_path)],
            capture_output=True, text=True, timeout=180,
            env={**os.environ, 'ROS_DOMAIN_ID': str(domain)})
    except subprocess.TimeoutExpired as error:
        pytest.fail(f'node_load.py hung: stdout {error.stdout!r} stderr {error.stderr!r}')
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(result_path.read_text())
    assert result['published'] >= 10 and result['points'] is True
    assert 0 < result['answered'] <= result['published']
    # every answered frame came with its cloud (the node builds it only for a subscriber)
    assert result['clouds_received'] >= result['answered'] - 1
    assert result['latency_ms']['p50'] > 0 and result['rss_mb']['start'] > 0
    # the cloud goes out after the depth: its latency (stamp -> received) is the longer
    assert result['cloud_latency_ms']['n'] >= result['clouds_received'] > 0
    assert result['cloud_latency_ms']['p50'] >= 0.9 * result['latency_ms']['p50']
    assert result['cloud_size'] == [320, 240]  # the 640x480 camera at points_stride 2 (-p)
    # the node's own account (depth_info) of the frames it answered
    assert result['answered'] - 1 <= result['node_answered'] <= result['published']
    assert 0 < result['inference_ms']['p50'] <= result['node_latency_ms']['p50']
    assert result['node_frames_skipped'] >= 0
    # --profile: py-spy sampled the node's threads during the measured stream
    profile = result['profile']
    worker = dict(profile['metric_solver_worker']['top'])
    assert worker['DepthNodeCore._work'] > 0.9  # the worker's loop is on every sample
    assert 0 < worker['DepthNodeCore._process_image'] < 1
    assert 0 < worker['Mailbox.take'] < 1  # waiting for frames: idle samples count too
    assert 'main' in dict(profile['MainThread']['top'])


def test_train_step_profile_reports_every_phase_and_the_bound():
    run = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'train_step.py'), '--batch-size', '2',
         '--size', '56', '70', '--repeat', '1', '--workers', '3', '--json'],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result['ms']) == {'layout', 'pack', 'unpickle', 'unpickle_specs', 'render', 'step'}
    assert all(v > 0 for v in result['ms'].values())
    trainer = 1e3 / (result['ms']['unpickle'] + result['ms']['render'] + result['ms']['step'])
    workers = 3e3 / (result['ms']['layout'] + result['ms']['pack'])
    # (from the printed ms, which are rounded to 0.01)
    assert result['trainer_batches_per_s'] == pytest.approx(trainer, rel=0.02)
    assert result['workers_batches_per_s'] == pytest.approx(workers, rel=0.02)
    assert result['bound'] == ('training process' if trainer <= workers else 'scene workers')
    assert result['images_per_s'] == pytest.approx(min(trainer, workers) * 2, rel=0.02)


def test_cpu_sharing_interleaves_its_conditions_by_pausing_the_neighbours():
    try:
        run = subprocess.run(
            [sys.executable, str(REPO / 'benchmarks' / 'cpu_sharing.py'), '--backends', 'torch',
             '--num-threads', '1', '--cycles', '2', '--seconds', '0.6', '--settle-s', '0',
             '--busy', '1', '--width', '320', '--height', '240', '--json'],
            capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f'cpu_sharing.py hung: stdout {error.stdout!r} stderr {error.stderr!r}')
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result['cycles'] == 2
    (row,) = result['rows']
    windows = {key: row[key]['windows'] for key in ('alone', 'beside_torch', 'beside_busy')}
    assert all(len(w) == 2 and all(x['frames'] > 0 for x in w) for w in windows.values())
    # paused means paused: no neighbour ran in an alone window, and each ran beside
    assert all(w['neighbours_cpu_s'] == 0 for w in windows['alone'])
    assert all(w['neighbours_cpu_s'] >= 0.2 for w in windows['beside_torch'])
    assert all(w['neighbours_cpu_s'] >= 0.2 for w in windows['beside_busy'])
    # a ratio compares each window with the same cycle's alone window
    ratios = sorted(b['fps'] / a['fps'] for a, b in zip(windows['alone'], windows['beside_busy'],
                                                        strict=True))
    assert row['beside_busy_ratio_range'] == [round(ratios[0], 3), round(ratios[1], 3)]
    assert row['beside_busy_ratio'] == round((ratios[0] + ratios[1]) / 2, 3)
