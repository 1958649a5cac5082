"""Real rosbag2 files (mcap and sqlite3) written and read back with `rosbags`; stamp pairing."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from metric_solver_ros import bagio
from metric_solver_ros.conversions import (
    camera_info_to_intrinsics,
    compressed_to_rgb,
    depth_image_to_m,
    image_to_rgb,
)
from metric_solver_ros.data.sample import Sample

IMAGE, DEPTH = '/camera/color/image_raw', '/camera/depth/image_raw'
INFO = '/camera/color/camera_info'
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


INTRINSICS = (6.0, 7.0, 3.5, 2.5)  # (fx, fy, cx, cy) [px] of every test frame


def _frames(n=3, shape=(5, 8), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        depth = rng.uniform(0.3, 9.0, shape).astype(np.float32)
        depth[0, 0], depth[0, 1], depth[0, 2] = np.nan, np.inf, 0.0
        out.append(Sample(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), depth,
                          INTRINSICS))
    return out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_rgbd_bag_round_trip(tmp_path, storage):
    frames = _frames()
    frames[1].intrinsics = None  # no CameraInfo for this frame
    path = tmp_path / 'bag'
    assert bagio.write_rgbd_bag(path, frames, storage=storage, rate_hz=20.0) == 3
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    assert (path / 'metadata.yaml').is_file() and (path / f'bag{suffix}').is_file()
    assert bagio.list_topics(path) == {IMAGE: 'sensor_msgs/msg/Image',
                                       DEPTH: 'sensor_msgs/msg/Image',
                                       INFO: 'sensor_msgs/msg/CameraInfo'}
    messages = list(bagio.read_topics(path, [IMAGE, DEPTH, INFO]))
    log_times = [t for _, t, _ in messages]
    assert log_times == sorted(log_times)
    by_topic: dict[str, list] = {}
    for topic, log_time, msg in messages:
        assert bagio.header_stamp_ns(msg) == log_time
        assert msg.header.frame_id == 'camera_color_optical_frame'
        by_topic.setdefault(topic, []).append(msg)
    assert [bagio.header_stamp_ns(m) for m in by_topic[IMAGE]] == [T0, T0 + 50 * MS,
                                                                   T0 + 100 * MS]
    assert len(by_topic[INFO]) == 2
    assert camera_info_to_intrinsics(by_topic[INFO][0]) == INTRINSICS
    assert by_topic[INFO][0].width == 8 and by_topic[INFO][0].height == 5
    for frame, image_msg, depth_msg in zip(frames, by_topic[IMAGE], by_topic[DEPTH], strict=True):
        assert image_msg.encoding == 'rgb8'
        np.testing.assert_array_equal(image_to_rgb(image_msg), frame.image)
        assert depth_msg.encoding == '32FC1'
        # 32FC1 keeps values exactly, NaN / +inf / 0 included (REP 117).
        np.testing.assert_array_equal(depth_image_to_m(depth_msg), frame.depth_m)
    # A bare storage file reads as well as the directory.
    assert len(list(bagio.read_topics(path / f'bag{suffix}', [DEPTH]))) == 3


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_16uc1_depth_is_millimetres_with_zero_for_unrepresentable(tmp_path, storage):
    depth = np.array([[1.2344, 1.2346, np.nan, np.inf],
                      [0.0, 65.535, 70.0, 0.0004]], dtype=np.float32)
    frame = Sample(np.zeros((2, 4, 3), np.uint8), depth, INTRINSICS)
    bagio.write_rgbd_bag(tmp_path / 'bag', [frame], storage=storage, depth_encoding='16UC1')
    (_, _, msg), = bagio.read_topics(tmp_path / 'bag', [DEPTH])
    assert msg.encoding == '16UC1' and msg.step == 8
    raw = np.frombuffer(bytes(msg.data), '<u2').reshape(2, 4)
    assert raw.tolist() == [[1234, 1235, 0, 0], [0, 65535, 0, 0]]
    back = depth_image_to_m(msg)
    np.testing.assert_allclose(back[0, :2], [1.234, 1.235], rtol=1e-6)
    assert np.isnan(back[0, 2:]).all() and np.isnan(back[1, [0, 2, 3]]).all()


def test_16uc1_warns_with_the_count_and_share_of_gt_beyond_65_m(tmp_path, capsys):
    # Finite GT: 1.0, 65.535, 70.0, 100.0 (+ NaN, +inf, 0 that are not GT): 2 of 4 lost.
    depth = np.array([[1.0, 65.535, 70.0, 100.0], [np.nan, np.inf, 0.0, 1.0]], np.float32)
    far = Sample(np.zeros((2, 4, 3), np.uint8), depth, INTRINSICS)
    near = Sample(np.zeros((2, 4, 3), np.uint8), np.full((2, 4), 3.0, np.float32), INTRINSICS)
    bagio.write_rgbd_bag(tmp_path / 'bag16', [near, far], depth_encoding='16UC1')
    err = capsys.readouterr().err
    assert '2 GT pixels (15.4% of the finite GT) in 1 of 2 frames beyond 65.535 m' in err
    assert '--depth-encoding 32FC1' in err and str(tmp_path / 'bag16') in err
    assert bagio.list_topics(tmp_path / 'bag16')[DEPTH] == 'sensor_msgs/msg/Image'  # written
    bagio.write_rgbd_bag(tmp_path / 'bag32', [near, far], depth_encoding='32FC1')
    bagio.write_rgbd_bag(tmp_path / 'near16', [near], depth_encoding='16UC1')
    assert capsys.readouterr().err == ''  # 32FC1 keeps everything; nothing lost: no warning


def test_make_bag_16uc1_of_outdoor_scenes_warns_on_stderr(tmp_path, capsys):
    from metric_solver_ros.cli import main
    from metric_solver_ros.data.synthetic import render_scene

    assert main(['make-bag', '--out', str(tmp_path / 'b'), '--synthetic', 'outdoor', '--seed',
                 '1', '--frames', '2', '--size', '24', '32', '--depth-encoding', '16UC1']) == 0
    printed = capsys.readouterr()
    depths = [render_scene('outdoor', seed, 24, 32).depth_m for seed in (1, 2)]
    beyond = sum(int(np.count_nonzero(np.isfinite(d) & (d > 65.5355))) for d in depths)
    assert beyond > 0
    assert f'warning: {tmp_path / "b"}: {beyond} GT pixels' in printed.err
    assert 'written as 0' in printed.err and 'wrote 2 frames' in printed.out

def test_compressed_images_png_lossless_and_jpeg_close(tmp_path):
    rng = np.random.default_rng(1)
    # Flat 16x16 blocks (a 4:2:0 JPEG macroblock) of distinct colours: JPEG keeps their centres
    # closely (so the channel order is checked); edges blur through chroma upsampling.
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), 16, 0), 16, 1)
    with bagio.BagWriter(tmp_path / 'bag', storage='sqlite3') as bag:
        bag.write('/png', bagio.rgb_to_compressed_msg(rgb, T0, 'cam', fmt='png'), T0)
        bag.write('/jpeg', bagio.rgb_to_compressed_msg(rgb, T0, 'cam', fmt='jpeg'), T0)
    msgs = {topic: msg for topic, _, msg in bagio.read_topics(tmp_path / 'bag', ['/png', '/jpeg'])}
    assert msgs['/png'].format == 'rgb8; png compressed bgr8'
    np.testing.assert_array_equal(compressed_to_rgb(msgs['/png']), rgb)
    jpeg = compressed_to_rgb(msgs['/jpeg']).astype(int)
    assert jpeg.shape == rgb.shape
    assert np.abs(jpeg[4::8, 4::8] - rgb[4::8, 4::8]).max() <= 8
    assert np.abs(jpeg - rgb).mean() < 4


def test_compressed_rgbd_bag_uses_the_image_transport_topic(tmp_path):
    bagio.write_rgbd_bag(tmp_path / 'bag', _frames(2), compressed=True)
    topics = bagio.list_topics(tmp_path / 'bag')
    assert topics[IMAGE + '/compressed'] == 'sensor_msgs/msg/CompressedImage'
    assert IMAGE not in topics


def test_writer_and_reader_errors(tmp_path):
    bagio.write_rgbd_bag(tmp_path / 'bag', _frames(1))
    with pytest.raises(ValueError, match='exists'):
        bagio.write_rgbd_bag(tmp_path / 'bag', _frames(1))
    with pytest.raises(ValueError, match='storage'):
        bagio.BagWriter(tmp_path / 'other', storage='rosbag1')
    with pytest.raises(ValueError, match='16UC1'):
        bagio.write_rgbd_bag(tmp_path / 'x', _frames(1), depth_encoding='8UC1')
    with pytest.raises(ValueError, match=r'/nope.*holds: .*/camera/depth/image_raw'):
        list(bagio.read_topics(tmp_path / 'bag', ['/nope']))
    with pytest.raises(FileNotFoundError):
        list(bagio.read_topics(tmp_path / 'missing', [DEPTH]))
    with pytest.raises(ValueError, match='carries'):
        with bagio.BagWriter(tmp_path / 'mixed') as bag:
            bag.write('/t', bagio.rgb_to_image_msg(np.zeros((1, 1, 3), np.uint8), T0, 'c'), T0)
            bag.write('/t', bagio.camera_info_msg((1, 1, 0, 0), 1, 1, T0, 'c'), T0)


def test_cdr_header_stamp_both_endiannesses():
    msg = bagio.depth_to_image_msg(np.ones((1, 1)), T0 + 123, 'cam')
    raw = bagio.get_typestore().serialize_cdr(msg, msg.__msgtype__)
    assert bagio.cdr_header_stamp_ns(raw) == T0 + 123 == bagio.header_stamp_ns(msg)
    sec, nsec = divmod(T0 + 123, 10 ** 9)
    big_endian = bytes([0, 0, 0, 0]) + struct.pack('>iI', sec, nsec)
    assert bagio.cdr_header_stamp_ns(big_endian) == T0 + 123
    with pytest.raises(ValueError):
        bagio.cdr_header_stamp_ns(b'\x00\x01')


# ----------------------------------------------------------------------------- pairing


def test_pair_by_stamp_with_jitter_and_missing_frames():
    images = [(i * 100 * MS, f'i{i}') for i in range(6)]
    jitter_ms = {0: 3, 1: -7, 2: 12, 4: -19, 5: 25}  # frame 3 has no depth; 5 is too far
    depths = [(i * 100 * MS + j * MS, f'd{i}') for i, j in jitter_ms.items()]
    pairs = bagio.pair_by_stamp(images, depths, tolerance_ns=20 * MS)
    assert pairs == [('i0', 'd0', 3 * MS), ('i1', 'd1', -7 * MS), ('i2', 'd2', 12 * MS),
                     ('i4', 'd4', -19 * MS)]
    # Input order does not matter; the tolerance is inclusive.
    assert bagio.pair_by_stamp(images[::-1], depths[::-1], 20 * MS) == pairs
    assert len(bagio.pair_by_stamp(images, depths, 25 * MS)) == 5
    assert bagio.pair_by_stamp(images, [], 20 * MS) == []
    with pytest.raises(ValueError):
        bagio.pair_by_stamp(images, depths, -1)


def test_pair_by_stamp_uses_each_depth_once_closest_first():
    # One depth between two images: it goes to the closer image (b); a takes its second choice.
    images = [(0, 'a'), (10, 'b')]
    depths = [(-8, 'x'), (9, 'y')]
    assert bagio.pair_by_stamp(images, depths, 10) == [('a', 'x', -8), ('b', 'y', -1)]
    # Only one depth for two images: the closer image gets it, the other stays unpaired.
    assert bagio.pair_by_stamp(images, [(9, 'y')], 10) == [('b', 'y', -1)]
    # Ties go to the earlier image.
    assert bagio.pair_by_stamp(images, [(5, 'm')], 10) == [('a', 'm', 5)]
    # Two depths near one image: nearest wins, the other is unused.
    assert bagio.pair_by_stamp([(0, 'a')], [(4, 'p'), (-2, 'q')], 10) == [('a', 'q', -2)]


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_synced_reader_pairs_by_header_stamp_not_log_time(tmp_path, storage):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (3, 4, 3), dtype=np.uint8) for _ in range(5)]
    depths = [np.full((3, 4), float(i + 1), np.float32) for i in range(5)]
    with bagio.BagWriter(tmp_path / 'bag', storage=storage) as bag:
        for i in range(5):
            stamp = T0 + i * 100 * MS
            bag.write(IMAGE, bagio.rgb_to_image_msg(images[i], stamp, 'cam'), stamp + 1 * MS)
            if i == 2:
                continue  # dropped depth frame
            depth_stamp = stamp + (-5 if i % 2 else 8) * MS
            # Depth arrives 150 ms late: log time order differs from header stamp order.
            bag.write(DEPTH, bagio.depth_to_image_msg(depths[i], depth_stamp, 'cam'),
                      stamp + 150 * MS)
    reader = bagio.SyncedReader(tmp_path / 'bag', IMAGE, [DEPTH], tolerance_ns=10 * MS)
    assert reader.stats.messages == {IMAGE: 5, DEPTH: 4}
    assert reader.stats.matched == 4 and len(reader) == 4
    assert reader.stats.max_abs_dt_ns == 8 * MS
    frames = list(reader)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.stamp_ns for f in frames] == [T0 + i * 100 * MS for i in (0, 1, 3, 4)]
    assert [f.dt_ns[DEPTH] for f in frames] == [8 * MS, -5 * MS, -5 * MS, 8 * MS]
    for f, i in zip(frames, (0, 1, 3, 4), strict=True):
        np.testing.assert_array_equal(image_to_rgb(f.msgs[IMAGE]), images[i])
        assert float(depth_image_to_m(f.msgs[DEPTH])[0, 0]) == i + 1
    # Reading twice gives the same frames (deterministic), max_frames keeps the earliest.
    assert [f.stamp_ns for f in reader] == [f.stamp_ns for f in frames]
    first_two = bagio.SyncedReader(tmp_path / 'bag', IMAGE, [DEPTH], 10 * MS, max_frames=2)
    assert [f.stamp_ns for f in first_two] == [T0, T0 + 100 * MS]
    # A tighter tolerance drops the 8 ms pairs.
    assert len(bagio.SyncedReader(tmp_path / 'bag', IMAGE, [DEPTH], 6 * MS)) == 2
    assert bagio.first_message(tmp_path / 'bag', DEPTH).encoding == '32FC1'
