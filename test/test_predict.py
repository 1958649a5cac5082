"""``metric-solver predict`` on real image files with a small random-weight model (CPU)."""

from __future__ import annotations

import argparse
import math

import cv2
import numpy as np
import pytest
from node_harness import camera_image, small_checkpoint

from metric_solver_ros.commands import predict
from metric_solver_ros.engine import DepthEngine
from metric_solver_ros.visualize import read_ply

WIDTH, HEIGHT = 64, 48
INTRINSICS = (60.0, 61.0, 31.5, 23.5)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp('model') / 'small.safetensors')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rgb = camera_image(WIDTH, HEIGHT)
    first, second = folder / 'room.png', folder / 'mirror.jpg'
    cv2.imwrite(str(first), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(second), cv2.cvtColor(np.ascontiguousarray(rgb[:, ::-1]), cv2.COLOR_RGB2BGR))
    return first, second


@pytest.fixture(scope='module')
def engine(checkpoint):
    return DepthEngine.from_checkpoint(str(checkpoint), device='cpu')


def _run(argv):
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    return predict.run(parser.parse_args([str(a) for a in argv]))


def _expected_points(depth_m, intrinsics, stride=1, max_range_m=math.inf):
    """Hand back-projection of the strided pixels, in PLY order (row-major, finite, in range)."""
    fx, fy, cx, cy = intrinsics
    rows = []
    for v in range(0, depth_m.shape[0], stride):
        for u in range(0, depth_m.shape[1], stride):
            z = float(depth_m[v, u])
            point = ((u - cx) * z / fx, (v - cy) * z / fy, z)
            if math.isfinite(z) and math.dist(point, (0, 0, 0)) <= max_range_m:
                rows.append(point)
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _ply_xyz(path):
    vertices = read_ply(path)
    return np.stack([vertices[k] for k in 'xyz'], axis=1).astype(np.float64), vertices


def test_outputs_have_the_right_dtypes_shapes_and_units(checkpoint, images, engine, tmp_path):
    out = tmp_path / 'out'
    fx, fy, cx, cy = INTRINSICS
    assert _run([*images, '--anchor', 2.0, '--checkpoint', checkpoint, '--device', 'cpu',
                 '--out', out, '--fx', fx, '--fy', fy, '--cx', cx, '--cy', cy]) == 0
    for path in images:
        stem = out / path.stem
        depth = np.load(f'{stem}_depth.npy')
        assert depth.dtype == np.float32 and depth.shape == (HEIGHT, WIDTH)
        # The command writes exactly what the engine computes for that file and anchor.
        rgb = predict.read_rgb(path)
        expected = engine.infer(rgb, 2.0)
        np.testing.assert_array_equal(depth, expected.depth_m)

        mm = cv2.imread(f'{stem}_depth_mm.png', cv2.IMREAD_UNCHANGED)
        assert mm.dtype == np.uint16 and mm.shape == (HEIGHT, WIDTH)
        valid = np.isfinite(depth) & (np.round(depth * 1000.0) <= 65535)
        np.testing.assert_array_equal(mm[valid], np.round(depth[valid] * 1000.0).astype(np.uint16))
        assert np.all(mm[~valid] == 0)
        assert np.abs(mm[valid] / 1000.0 - depth[valid]).max() <= 0.0005 + 1e-6

        mask = cv2.imread(f'{stem}_mask.png', cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(mask, np.where(expected.near, 255, 0))

        figure = cv2.imread(f'{stem}_depth.png', cv2.IMREAD_UNCHANGED)
        assert figure.dtype == np.uint8 and figure.shape[0] == HEIGHT
        assert figure.shape[1] > WIDTH and figure.shape[2] == 3  # image + colour bar

        xyz, vertices = _ply_xyz(f'{stem}.ply')
        assert set(vertices.dtype.names) == {'x', 'y', 'z', 'red', 'green', 'blue'}
        assert len(xyz) == int(np.isfinite(depth).sum())
        np.testing.assert_allclose(xyz, _expected_points(depth, INTRINSICS), rtol=1e-5,
                                   atol=1e-5)
        colours = np.stack([vertices[k] for k in ('red', 'green', 'blue')], axis=1)
        np.testing.assert_array_equal(colours, rgb[np.isfinite(depth)])


def test_stride_and_max_range_filter_the_cloud(checkpoint, images, tmp_path):
    fx, fy, cx, cy = INTRINSICS
    common = ['--anchor', 10.0, '--checkpoint', checkpoint, '--device', 'cpu',
              '--fx', fx, '--fy', fy, '--cx', cx, '--cy', cy]
    assert _run([images[0], *common, '--out', tmp_path / 'all']) == 0
    depth = np.load(tmp_path / 'all' / 'room_depth.npy')
    norms = np.linalg.norm(_expected_points(depth, INTRINSICS, stride=2), axis=1)
    max_range = float(np.median(norms))
    out = tmp_path / 'near'
    assert _run([images[0], *common, '--out', out, '--points-stride', 2,
                 '--max-range', max_range]) == 0
    xyz, _ = _ply_xyz(out / 'room.ply')
    expected = _expected_points(depth, INTRINSICS, stride=2, max_range_m=max_range)
    assert 0 < len(xyz) == len(expected) < len(norms)
    np.testing.assert_allclose(xyz, expected, rtol=1e-5, atol=1e-5)


def test_multi_anchor_fusion_matches_the_engine(checkpoint, images, engine, tmp_path):
    assert _run([images[0], '--anchors', 2.0, 40.0, 10.0, '--checkpoint', checkpoint,
                 '--device', 'cpu', '--out', tmp_path]) == 0
    expected = engine.infer(predict.read_rgb(images[0]), [2.0, 10.0, 40.0])
    np.testing.assert_array_equal(np.load(tmp_path / 'room_depth.npy'), expected.depth_m)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'room_mask.png'),
                                             cv2.IMREAD_UNCHANGED) == 255, expected.near)
    assert not (tmp_path / 'room.ply').exists()  # no intrinsics, no cloud


def test_camera_info_yaml_for_another_resolution_is_scaled(checkpoint, images, tmp_path,
                                                           capsys):
    fx, fy, cx, cy = 120.0, 122.0, 63.5, 47.5  # calibrated at 2x the image size
    yaml_path = tmp_path / 'camera.yaml'
    yaml_path.write_text(
        'image_width: 128\nimage_height: 96\ncamera_name: test\n'
        f'camera_matrix:\n  rows: 3\n  cols: 3\n  data: [{fx}, 0, {cx}, 0, {fy}, {cy}, 0, 0, 1]\n'
        'distortion_model: plumb_bob\n'
        'distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0, 0, 0, 0, 0]\n')
    out = tmp_path / 'out'
    assert _run([images[0], '--camera-info', yaml_path, '--checkpoint', checkpoint,
                 '--device', 'cpu', '--out', out]) == 0
    printed = capsys.readouterr().out
    assert 'scaled to 64x48' in printed and '128x96' in printed
    scaled = (fx / 2, fy / 2, (cx + 0.5) / 2 - 0.5, (cy + 0.5) / 2 - 0.5)
    assert scaled == pytest.approx(INTRINSICS)
    depth = np.load(out / 'room_depth.npy')
    xyz, _ = _ply_xyz(out / 'room.ply')
    np.testing.assert_allclose(xyz, _expected_points(depth, scaled), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('orientation', range(8))
def test_upright_turns_intrinsics_with_the_image(orientation):
    # Every stored pixel keeps its viewing ray: in the turned image, with the turned
    # intrinsics, its normalised coordinates are the same up to the rotation / flip (same
    # length), with unequal focal lengths and an off-centre principal point.
    h, w, k = 5, 7, (50.0, 80.0, 2.7, 1.9)
    index = np.arange(h * w).reshape(h, w)
    stored = np.stack((index, index // 256, np.zeros_like(index)), -1).astype(np.uint8)
    image_of, _ = predict._ORIENTATIONS[orientation]
    shown = np.ascontiguousarray(image_of(stored))
    turned, (fx, fy, cx, cy) = predict.upright(stored, shown, k)
    assert turned is shown
    v2, u2 = np.mgrid[0:shown.shape[0], 0:shown.shape[1]]
    source = shown[..., 0].astype(int) + 256 * shown[..., 1].astype(int)
    v, u = np.divmod(source, w)
    before = np.hypot((u - k[2]) / k[0], (v - k[3]) / k[1])
    after = np.hypot((u2 - cx) / fx, (v2 - cy) / fy)
    np.testing.assert_allclose(after, before, rtol=1e-12)


def test_upright_refuses_a_symmetric_image():
    # A blank frame turned 90 deg equals its transpose: the principal point cannot be told.
    blank = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(ValueError, match='symmetric'):
        predict.upright(blank, np.rot90(blank, -1), (50.0, 50.0, 2.0, 1.0))


def test_an_exif_rotated_photo_with_intrinsics_is_predicted_upright(checkpoint, tmp_path):
    # A phone photo stored landscape, tagged "rotate 90 CW", with the sensor's intrinsics: the
    # network sees it upright, and the cloud uses intrinsics turned with it.
    from test_datasets import _with_exif_orientation

    stored = camera_image(64, 48)
    jpeg = cv2.imencode('.jpg', cv2.cvtColor(stored, cv2.COLOR_RGB2BGR))[1].tobytes()
    path = tmp_path / 'phone.jpg'
    path.write_bytes(_with_exif_orientation(jpeg, 6))  # 6: rotate 90 deg clockwise to view
    out = tmp_path / 'out'
    assert _run([path, '--fx', '60', '--fy', '61', '--cx', '31.5', '--cy', '23.5',
                 '--checkpoint', checkpoint, '--device', 'cpu', '--out', out]) == 0
    depth = np.load(out / 'phone_depth.npy')
    assert depth.shape == (64, 48)  # upright: portrait
    turned = (61.0, 60.0, 48 - 1 - 23.5, 31.5)
    xyz, _ = _ply_xyz(out / 'phone.ply')
    np.testing.assert_allclose(xyz, _expected_points(depth, turned), rtol=1e-5, atol=1e-5)


def test_camera_info_yaml_at_the_image_resolution_is_used_as_is(tmp_path):
    yaml_path = tmp_path / 'camera.yaml'
    yaml_path.write_text('image_width: 64\nimage_height: 48\ncamera_matrix:\n'
                         '  data: [60, 0, 31.5, 0, 61, 23.5, 0, 0, 1]\n'
                         'distortion_coefficients:\n  data: [0.1, 0, 0, 0, 0]\n')
    intrinsics, size, distorted = predict.read_camera_info_yaml(yaml_path)
    assert intrinsics == INTRINSICS and size == (64, 48) and distorted


@pytest.mark.parametrize('text, message', [
    ('image_width: 64\nimage_height: 48\n', 'lacks camera_matrix'),
    ('image_width: 64\nimage_height: 48\ncamera_matrix:\n  data: [1, 2, 3]\n', '9 numbers'),
    ('image_width: 64\nimage_height: 48\ncamera_matrix:\n  data: [0, 0, 1, 0, 5, 1, 0, 0, 1]\n',
     'focal'),
    ('- just\n- a list\n', 'expected a mapping'),
    ('image_width: [\n', 'not valid YAML'),
])
def test_bad_camera_info_yaml_is_refused(tmp_path, text, message):
    yaml_path = tmp_path / 'camera.yaml'
    yaml_path.write_text(text)
    with pytest.raises(ValueError, match=message):
        predict.read_camera_info_yaml(yaml_path)


def test_user_errors_are_clear(checkpoint, images, tmp_path):
    model = ['--checkpoint', checkpoint, '--device', 'cpu', '--out', tmp_path / 'out']
    with pytest.raises(FileNotFoundError, match='no image at .*missing.png'):
        _run([images[0], tmp_path / 'missing.png', *model])
    not_an_image = tmp_path / 'notes.png'
    not_an_image.write_text('this is not a PNG')
    with pytest.raises(ValueError, match='cannot read .*notes.png'):
        _run([not_an_image, *model])
    other = tmp_path / 'room.jpg'
    other.write_bytes(images[1].read_bytes())
    with pytest.raises(ValueError, match='same outputs'):
        _run([images[0], other, *model])
    for bad in (0.0, -1.0, float('nan')):
        with pytest.raises(ValueError, match='> 0 m'):
            _run([images[0], '--anchor', bad, *model])
    with pytest.raises(ValueError, match='outside the model.s anchor pool'):
        _run([images[0], '--anchors', 2.0, 1000.0, *model])
    with pytest.raises(ValueError, match='missing: --cx, --cy'):
        _run([images[0], '--fx', 60, '--fy', 60, *model])
    with pytest.raises(ValueError, match='either'):
        _run([images[0], '--fx', 60, '--fy', 60, '--cx', 30, '--cy', 20,
              '--camera-info', tmp_path / 'c.yaml', *model])
    with pytest.raises(FileNotFoundError, match='no camera info file'):
        _run([images[0], '--camera-info', tmp_path / 'c.yaml', *model])
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        _run([images[0], '--checkpoint', tmp_path / 'none.safetensors', '--out', tmp_path])
    with pytest.raises(ValueError, match='points-stride'):
        _run([images[0], '--points-stride', 0, *model])
    assert not (tmp_path / 'out').exists()  # nothing is written when the inputs are bad


def test_16_bit_and_float_images_are_refused_and_8_bit_grey_is_taken(checkpoint, images, tmp_path,
                                                                     capsys):
    from metric_solver_ros.cli import main

    ramp = np.arange(HEIGHT * WIDTH, dtype=np.uint16).reshape(HEIGHT, WIDTH) * 20
    cases = {'depth_mm.png': (ramp, '16-bit 1-channel image (uint16)'),
             'rgb16.png': (np.stack([ramp] * 3, -1), '16-bit 3-channel image (uint16)'),
             'depth_m.tiff': (ramp.astype(np.float32) / 1000, '32-bit 1-channel image (float32)')}
    out = tmp_path / 'out'
    for name, (array, kind) in cases.items():
        assert cv2.imwrite(str(tmp_path / name), array)
        # Refused before the model loads, also behind a good image; one line in the CLI.
        assert main(['predict', str(images[0]), str(tmp_path / name), '--checkpoint',
                     str(checkpoint), '--device', 'cpu', '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert f'{tmp_path / name} is a {kind}' in err and 'takes 8-bit colour or grey' in err
        assert len(err.strip().splitlines()) == 1
        with pytest.raises(ValueError, match='16-bit|32-bit'):
            predict.read_rgb(tmp_path / name)
    assert not out.exists()
    grey = (ramp // 64).astype(np.uint8)
    assert cv2.imwrite(str(tmp_path / 'grey.png'), grey)
    rgb = predict.read_rgb(tmp_path / 'grey.png')
    assert rgb.shape == (HEIGHT, WIDTH, 3) and all((rgb[..., c] == grey).all() for c in range(3))
    assert _run([tmp_path / 'grey.png', '--checkpoint', checkpoint, '--device', 'cpu',
                 '--out', out]) == 0
    assert np.load(out / 'grey_depth.npy').shape == (HEIGHT, WIDTH)


def test_colour_bar_ticks_are_round_and_inside_the_range():
    from metric_solver_ros.visualize import nice_ticks

    assert nice_ticks(0.5, 80.0) == [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
    assert nice_ticks(1.4, 4.5) == [2.0, 3.0, 4.0]  # narrow: 1-9 x 10^n, not only 2
    assert nice_ticks(2.05, 2.95) == [2.5]  # narrower still: halves too (fewer than 3 exist)
    for low, high in ((0.013, 0.9), (3.3, 3.9), (7.0, 480.0)):
        ticks = nice_ticks(low, high)
        assert ticks and all(low <= t <= high for t in ticks) and ticks == sorted(ticks)


def test_a_folder_is_one_sequence_filtered_in_name_order(checkpoint, tmp_path):
    from metric_solver_ros.data.synthetic import render_sequence, sequence_spec
    from metric_solver_ros.temporal_filter import CameraMotion, TemporalFilter

    folder = tmp_path / 'frames'
    folder.mkdir()
    frames = list(render_sequence(sequence_spec('indoor', 'static', 4, seed=3), HEIGHT, WIDTH))
    for i in (2, 0, 3, 1):  # written out of order: name order counts
        cv2.imwrite(str(folder / f'f{i:03d}.png'), cv2.cvtColor(frames[i].image,
                                                                cv2.COLOR_RGB2BGR))
    (folder / 'notes.txt').write_text('not an image')
    common = [folder, '--checkpoint', checkpoint, '--device', 'cpu', '--anchor', '10',
              '--fx', INTRINSICS[0], '--fy', INTRINSICS[1], '--cx', INTRINSICS[2],
              '--cy', INTRINSICS[3], '--points-stride', 2, '--max-range', 30]
    assert _run([*common, '--out', tmp_path / 'off']) == 0
    assert _run([*common, '--temporal-filter', 'full', '--out', tmp_path / 'full']) == 0
    raw = [np.load(tmp_path / 'off' / f'f{i:03d}_depth.npy') for i in range(4)]
    stream = TemporalFilter('full')
    for i in range(4):  # the command filters exactly as the filter does, in name order
        expected = stream.apply(raw[i], (10.0,))
        filtered = np.load(tmp_path / 'full' / f'f{i:03d}_depth.npy')
        np.testing.assert_allclose(filtered, expected, rtol=1e-6)
        xyz, _ = _ply_xyz(tmp_path / 'full' / f'f{i:03d}.ply')
        np.testing.assert_allclose(xyz, _expected_points(filtered, INTRINSICS, 2, 30.0),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / 'full' / 'f000_depth.npy'), raw[0])
    # A tripod: --motion-hint still holds the scale, as the filter told CameraMotion() does.
    assert _run([*common, '--temporal-filter', 'scale', '--motion-hint', 'still',
                 '--out', tmp_path / 'still']) == 0
    stream = TemporalFilter('scale')
    for i in range(4):
        expected = stream.apply(raw[i], (10.0,), CameraMotion())
        np.testing.assert_allclose(np.load(tmp_path / 'still' / f'f{i:03d}_depth.npy'),
                                   expected, rtol=1e-6)
    assert stream.held
    with pytest.raises(ValueError, match='--temporal-filter'):
        _run([*common, '--motion-hint', 'still'])
    assert not np.allclose(np.load(tmp_path / 'full' / 'f003_depth.npy'), raw[3], rtol=1e-4)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='no image'):
        _run([empty, '--checkpoint', checkpoint])
