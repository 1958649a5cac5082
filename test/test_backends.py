"""The engine on OpenVINO and ONNX Runtime: same outputs as torch through the same paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from node_harness import camera_image

from metric_solver_ros.backends import BACKENDS, BackendError
from metric_solver_ros.backends.graph import GraphBackend, _FasterOfTwo
from metric_solver_ros.backends.threads import default_num_threads, resolve_num_threads
from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
from metric_solver_ros.cli import main
from metric_solver_ros.engine import DepthEngine, EngineError, PointsRequest
from metric_solver_ros.model.fusion import DEFAULT_FUSION

RUNTIMES = ('openvino', 'onnxruntime')
INPUT_SIZE = 56  # 4:3 images -> a 56x70 network input: quick on 2 cores


@pytest.fixture(scope='module', autouse=True)
def keep_torch_threads():
    """num_threads is process-wide for torch: restore it for the other test modules."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def cache_home(tmp_path_factory):
    """An XDG cache home whose ONNX cache all engines here share (one export per size)."""
    return tmp_path_factory.mktemp('xdg_cache')


@pytest.fixture(scope='module')
def model():
    return load_checkpoint(default_model_path())


@pytest.fixture(scope='module')
def engines(model, cache_home):
    common = dict(device='cpu', precision='fp32', input_size=INPUT_SIZE, num_threads=1,
                  onnx_cache_dir=str(cache_home / 'metric_solver_ros' / 'onnx'))
    return {name: DepthEngine(model, backend=name, **common) for name in ('torch', *RUNTIMES)}


@pytest.fixture(scope='module')
def image():
    return camera_image(96, 72)


def _assert_depth_close(got, expected, rtol=1e-3):
    assert got.shape == expected.shape
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=rtol)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_single_anchor_matches_torch(engines, runtime, image):
    expected = engines['torch'].infer(image, 3.0)
    got = engines[runtime].infer(image, 3.0)
    assert engines[runtime].backend == runtime
    _assert_depth_close(got.depth_m, expected.depth_m)
    # the near decision sits on a threshold: a logit within float noise of 0 may flip
    assert (got.near == expected.near).mean() > 0.999
    assert got.timings_ms['encoder'] > 0 and got.anchors_m == (3.0,)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_fusion_redecode_and_points_take_the_same_paths(engines, runtime, image):
    reference, engine = engines['torch'], engines[runtime]
    points = PointsRequest((60.0, 60.0, 47.5, 35.5), stride=2, with_rgb=True)
    anchors = (1.0, 4.0, 20.0)
    expected = reference.infer(image, anchors, points=points)
    got = engine.infer(image, anchors, points=points)
    _assert_depth_close(got.depth_m, expected.depth_m)
    assert (got.near == expected.near).mean() > 0.999
    for rule in ('finest', 'covering'):  # the rule that names one anchor per pixel, and not
        reference.fusion = engine.fusion = rule
        try:
            index, reference_index = (e.infer(image, anchors).anchor_index
                                      for e in (engine, reference))
        finally:
            reference.fusion = engine.fusion = DEFAULT_FUSION
        if rule == 'finest':
            assert (index == reference_index).mean() > 0.999
        else:
            assert index is None and reference_index is None
    assert got.points_m.shape == expected.points_m.shape == (36, 48, 3)
    valid = np.isfinite(expected.points_m)
    assert np.array_equal(np.isfinite(got.points_m), valid)
    np.testing.assert_allclose(got.points_m[valid], expected.points_m[valid], rtol=1e-3,
                               atol=1e-5)
    np.testing.assert_array_equal(got.points_rgb, expected.points_rgb)
    # re-decoding the cached features equals decoding a fresh frame with that anchor
    again = engine.redecode(7.0)
    assert again.timings_ms['encoder'] == 0.0
    fresh = engine.infer(image, 7.0)
    np.testing.assert_array_equal(again.depth_m, fresh.depth_m)
    _assert_depth_close(again.depth_m, reference.infer(image, 7.0).depth_m)
    # one result per anchor from one batched decoder run
    each = engine.infer_each(image, [20.0, 1.0])
    for result, expected_each in zip(each, reference.infer_each(image, [20.0, 1.0]),
                                     strict=True):
        assert result.anchors_m == expected_each.anchors_m
        _assert_depth_close(result.depth_m, expected_each.depth_m)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_flip_tta_matches_torch(engines, runtime, image):
    reference, engine = engines['torch'], engines[runtime]
    reference.flip_tta = engine.flip_tta = True
    try:
        expected = reference.infer(image, (2.0, 10.0))
        got = engine.infer(image, (2.0, 10.0))
    finally:
        reference.flip_tta = engine.flip_tta = False
    _assert_depth_close(got.depth_m, expected.depth_m)


def test_num_threads_reach_torch_and_the_runtimes(engines, image):
    assert torch.get_num_threads() == 1
    for runtime in RUNTIMES:
        engines[runtime].infer(image, 10.0)
        detail = engines[runtime].backend_description
        assert detail.startswith(runtime) and detail.endswith('threads 1'), detail
    assert resolve_num_threads(None) is None
    assert resolve_num_threads(0) == default_num_threads() == min(len(os.sched_getaffinity(0)),
                                                                  4)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='num_threads'):
            resolve_num_threads(bad)


def test_auto_picks_a_backend_by_timing_on_the_first_frame(model, cache_home, image):
    engine = DepthEngine(model, device='cpu', input_size=INPUT_SIZE, backend='auto',
                         num_threads=1,
                         onnx_cache_dir=str(cache_home / 'metric_solver_ros' / 'onnx'))
    assert engine.backend == 'auto'
    engine.infer(image, 10.0)
    assert engine.backend in ('openvino', 'torch')
    detail = engine.backend_description
    assert '(auto: ' in detail and 'ms vs torch' in detail, detail


def test_bench_json_reports_the_backend(cache_home, capsys, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(cache_home))  # the export made above
    assert main(['bench', '--device', 'cpu', '--width', '96', '--height', '72',
                 '--input-size', str(INPUT_SIZE), '--warmup', '0', '--iters', '1', '--json',
                 '--backend', 'onnxruntime', '--num-threads', '1']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['backend'] == 'onnxruntime' and result['input_size'] == [56, 70]
    assert result['backend_detail'].startswith('onnxruntime')


def test_bad_backend_settings_say_why(model):
    with pytest.raises(EngineError, match='unknown backend .*auto, torch, openvino, onnxruntime'):
        DepthEngine(model, device='cpu', backend='tensorrt')
    assert BACKENDS == ('auto', 'torch', 'openvino', 'onnxruntime')
    with pytest.raises(EngineError, match='apply to backend torch'):
        DepthEngine(model, device='cpu', backend='openvino', compile=True)
    with pytest.raises(EngineError, match='runs fp32 on the CPU'):
        DepthEngine(model, device='cpu', precision='bf16', backend='onnxruntime')
    with pytest.raises(BackendError, match='provider NoSuchExecutionProvider is not available'):
        GraphBackend(model, 'onnxruntime', torch.device('cpu'),
                     providers=['NoSuchExecutionProvider'])


MISSING_RUNTIME = r'''
import sys
sys.modules['openvino'] = None  # the package is absent: its import fails
import numpy as np
from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
from metric_solver_ros.engine import DepthEngine, EngineError
model = load_checkpoint(default_model_path())
try:
    DepthEngine(model, device='cpu', backend='openvino')
except EngineError as exc:
    print('ERROR', exc)
engine = DepthEngine(model, device='cpu', backend='auto', input_size=56)
engine.infer(np.zeros((48, 64, 3), np.uint8), 10.0)
print('AUTO', engine.backend, engine.backend_description)
'''


def test_a_missing_runtime_is_a_clear_error_and_auto_falls_back():
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, '-c', MISSING_RUNTIME], env=env, check=True,
                         capture_output=True, text=True, timeout=240).stdout
    assert 'ERROR backend openvino requested but the openvino package cannot be imported' in out
    assert 'pip install openvino' in out
    assert 'AUTO torch torch (auto: OpenVINO unavailable)' in out


def test_omp_waiting_is_passive_unless_set():
    code = 'import os, metric_solver_ros; print(os.environ["OMP_WAIT_POLICY"])'
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    env['PYTHONPATH'] = os.pathsep.join(sys.path)
    run = [sys.executable, '-c', code]
    assert subprocess.run(run, env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == 'PASSIVE'
    env['OMP_WAIT_POLICY'] = 'ACTIVE'
    assert subprocess.run(run, env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == 'ACTIVE'


class _Sleeper:
    """A stand-in graph that takes a set time: the policy below is about timing only."""

    precision = 'f32'

    def __init__(self, seconds, made_in):
        self.seconds, self.made_in = seconds, made_in

    def run(self, feeds):
        time.sleep(self.seconds)
        return {'threads_made_in': self.made_in}


def _sleeping_variants(seconds):
    """A ``make`` for :class:`_FasterOfTwo`: its variants take ``seconds[threads]`` each.

    Also returns where each variant was made (the thread's name).
    """
    made = {}

    def make(threads):
        made[threads] = threading.current_thread().name
        return _Sleeper(seconds[threads], made[threads])

    return make, made


def _run_frames(encoder, frames):
    deadline = time.monotonic() + 30
    stop = encoder._frames + frames
    while encoder._frames < stop and time.monotonic() < deadline:
        encoder.run({})


# one thread much faster; slightly faster (within the old 10 % margin); much slower
@pytest.mark.parametrize('one_thread_s, expected', [(0.004, 1), (0.0118, 1), (0.03, 2)])
def test_one_encoder_thread_runs_unless_all_are_clearly_faster(monkeypatch, one_thread_s,
                                                               expected):
    """Two threads only while the recent frames say they are faster by 10 %.

    The one-thread graph is compiled off the stream's thread; a look that confirms the choice
    doubles the interval.
    """
    monkeypatch.setattr(_FasterOfTwo, 'FIRST_LOOK', 5)
    make, made = _sleeping_variants({None: 0.012, 1: one_thread_s})
    encoder = _FasterOfTwo(make, threads=2)
    _run_frames(encoder, 60)
    assert made[None] == threading.current_thread().name
    assert made[1] != threading.current_thread().name  # compiled in the background
    assert encoder.threads == expected
    if expected == 2:  # confirmed at each look: the interval grew
        assert encoder._interval > _FasterOfTwo.FIRST_LOOK


def test_the_encoder_thread_choice_keeps_a_band_against_flipping(monkeypatch):
    """One thread stays while it is less than ~11 % slower; beyond, all threads come back."""
    monkeypatch.setattr(_FasterOfTwo, 'FIRST_LOOK', 5)
    monkeypatch.setattr(_FasterOfTwo, 'LAST_LOOK', 20)
    seconds = {None: 0.012, 1: 0.0118}
    encoder = _FasterOfTwo(_sleeping_variants(seconds)[0], threads=2)
    _run_frames(encoder, 40)
    assert encoder.threads == 1
    seconds[1] = 0.0128  # 7 % slower: inside the band, no switch back (the interval grows)
    encoder._graphs[1].seconds = seconds[1]
    _run_frames(encoder, 80)
    assert encoder.threads == 1 and encoder._interval == _FasterOfTwo.LAST_LOOK
    encoder._graphs[1].seconds = 0.02  # two threads clearly faster now
    _run_frames(encoder, 50)
    assert encoder.threads == 2


@pytest.mark.skipif(default_num_threads() < 2, reason='needs 2 or more usable cores')
def test_openvino_with_automatic_threads_keeps_its_results(model, cache_home, image,
                                                          monkeypatch):
    """num_threads 0 on a multi-core CPU: both encoder variants get used, same depth."""
    monkeypatch.setattr(_FasterOfTwo, 'FIRST_LOOK', 3)
    common = dict(device='cpu', precision='fp32', input_size=INPUT_SIZE,
                  onnx_cache_dir=str(cache_home / 'metric_solver_ros' / 'onnx'))
    engine = DepthEngine(model, backend='openvino', num_threads=0, **common)
    expected = DepthEngine(model, backend='openvino', num_threads=1, **common).infer(image, 3.0)
    encoder = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        result = engine.infer(image, 3.0)
        _assert_depth_close(result.depth_m, expected.depth_m, rtol=1e-4)
        encoder = next(iter(engine._runtime._graphs.values()))[0]
        if sorted(encoder._graphs) == [1, 2] and encoder._times[1] and not encoder._explore_left:
            break
    assert isinstance(encoder, _FasterOfTwo) and sorted(encoder._graphs) == [1, 2]
    assert encoder._times[1], 'the one-thread variant was never timed'
