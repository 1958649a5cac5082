"""Image / camera_info / cloud conversions on real rclpy and rosbags messages."""

import array
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from metric_solver_ros.conversions import (
    MessageError,
    camera_info_image_size,
    camera_info_to_intrinsics,
    compressed_to_rgb,
    depth_image_to_m,
    image_to_rgb,
    pack_cloud,
    scale_intrinsics,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def make_image(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    rows = np.concatenate([row, np.full((height, pad), 77, np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, step=rows.shape[1],
                 data=array.array('B', rows.tobytes()))


@pytest.mark.parametrize('encoding, pixels', [
    ('rgb8', RGB),
    ('bgr8', RGB[..., ::-1]),
    ('rgba8', np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ('bgra8', np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
@pytest.mark.parametrize('pad', [0, 3])
def test_colour_encodings_give_rgb(encoding, pixels, pad):
    out = image_to_rgb(make_image(np.ascontiguousarray(pixels), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_replicated():
    mono = RGB[..., 0].copy()
    out = image_to_rgb(make_image(mono[..., None], 'mono8'))
    np.testing.assert_array_equal(out, np.repeat(mono[..., None], 3, axis=2))


@pytest.mark.parametrize('mutate, message', [
    (lambda m: setattr(m, 'encoding', '16UC1'), 'unsupported image encoding'),
    (lambda m: setattr(m, 'encoding', 'bayer_rggb8'), 'unsupported image encoding'),
    (lambda m: setattr(m, 'step', 20), 'shorter than one row'),
    (lambda m: setattr(m, 'height', 6), 'height x step'),
    (lambda m: setattr(m, 'width', 0), 'zero size'),
    (lambda m: setattr(m, 'height', 100000), 'limit'),
])
def test_malformed_images_are_refused_with_a_reason(mutate, message):
    msg = make_image(RGB, 'rgb8')
    mutate(msg)
    with pytest.raises(MessageError, match=message):
        image_to_rgb(msg)


def test_compressed_round_trip_and_corruption():
    ok, png = cv2.imencode('.png', cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format='png', data=array.array('B', png.tobytes()))
    np.testing.assert_array_equal(compressed_to_rgb(msg), RGB)
    broken = CompressedImage(format='jpeg', data=array.array('B', b'\xff\xd8garbage' * 10))
    with pytest.raises(MessageError, match='could not decode'):
        compressed_to_rgb(broken)
    with pytest.raises(MessageError, match='no data'):
        compressed_to_rgb(CompressedImage(format='jpeg'))
    # A PNG whose header claims 60000x60000 px (a decompression bomb): OpenCV raises instead
    # of returning None; still a refused message, not an exception of another kind.
    header = bytearray(png.tobytes())
    header[16:24] = (60000).to_bytes(4, 'big') * 2  # IHDR width, height
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, 'big')
    bomb = CompressedImage(format='png', data=array.array('B', bytes(header)))
    with pytest.raises(MessageError, match='could not decode'):
        compressed_to_rgb(bomb)


def test_depth_encodings():
    depth_m = np.array([[0.5, np.nan], [np.inf, 12.25]], np.float32)
    msg = make_image(depth_m.view(np.uint8).reshape(2, 8), '32FC1')
    msg.width = 2
    np.testing.assert_array_equal(depth_image_to_m(msg), depth_m)
    big = depth_m.astype('>f4')
    msg_be = make_image(big.view(np.uint8).reshape(2, 8), '32FC1')
    msg_be.width, msg_be.is_bigendian = 2, 1
    np.testing.assert_array_equal(depth_image_to_m(msg_be), depth_m)
    mm = np.array([[500, 0], [65535, 12250]], np.uint16)
    msg16 = make_image(mm.view(np.uint8).reshape(2, 4), '16UC1')
    msg16.width = 2
    out = depth_image_to_m(msg16)
    np.testing.assert_allclose(out, [[0.5, np.nan], [65.535, 12.25]], rtol=1e-6)
    with pytest.raises(MessageError, match='unsupported depth encoding'):
        depth_image_to_m(make_image(RGB, 'rgb8'))


def test_rosbags_messages_convert_too():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    image_t = store.types['sensor_msgs/msg/Image']
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='cam')
    msg = image_t(header=header, height=5, width=7, encoding='bgr8', is_bigendian=0, step=21,
                  data=np.ascontiguousarray(RGB[..., ::-1]).reshape(-1))
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_camera_info_intrinsics_and_refusals():
    info = CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    assert camera_info_to_intrinsics(info) == (500.0, 510.0, 320.0, 240.0)
    info.k = [0.0] * 9
    with pytest.raises(MessageError, match='focal'):
        camera_info_to_intrinsics(info)
    info.k = [float('nan'), 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    with pytest.raises(MessageError, match='not finite'):
        camera_info_to_intrinsics(info)


def test_camera_info_with_binning_and_roi_describes_the_smaller_image():
    # REP 104: width/height and k are the full sensor's; the image is the roi, binned.
    info = CameraInfo(width=1280, height=960, binning_x=2, binning_y=2)
    info.k = [1000.0, 0.0, 640.0, 0.0, 1020.0, 480.0, 0.0, 0.0, 1.0]
    assert camera_info_image_size(info) == (640, 480)
    assert camera_info_to_intrinsics(info) == (500.0, 510.0, 320.0, 240.0)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 800, 600
    assert camera_info_image_size(info) == (400, 300)
    assert camera_info_to_intrinsics(info) == (500.0, 510.0, 270.0, 220.0)
    info.roi.width = 0  # half set: not a roi (REP 104: unset is all 0), offsets ignored
    assert camera_info_image_size(info) == (640, 480)
    assert camera_info_to_intrinsics(info) == (500.0, 510.0, 320.0, 240.0)
    plain = CameraInfo(width=640, height=480)  # binning 0 = none, no roi
    assert camera_info_image_size(plain) == (640, 480)
    assert camera_info_image_size(CameraInfo()) == (0, 0)


def test_scale_intrinsics_keeps_pixel_centres():
    fx, fy, cx, cy = scale_intrinsics((500.0, 500.0, 319.5, 239.5), (640, 480), (320, 240))
    assert (fx, fy, cx, cy) == (250.0, 250.0, 159.5, 119.5)


def test_pack_cloud_layout():
    xyz = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [1, 2, 3]]], np.uint8)
    points = pack_cloud(xyz, rgb)
    assert points.dtype.itemsize == 16 and points.shape == (2, 2)
    raw = np.frombuffer(points.tobytes(), np.float32).reshape(4, 4)
    np.testing.assert_array_equal(raw[:, :3], xyz.reshape(4, 3))
    packed = raw[:, 3].view(np.uint32)
    assert list(packed) == [0xFF0000, 0x00FF00, 0x0000FF, 0x010203]
    assert pack_cloud(xyz).dtype.itemsize == 12


def test_node_runs_rgb8_without_opencv():
    # The GPU machine's ROS kit (tools/gpu_ros_kit.sh) carries no OpenCV: the node module must
    # import, and rgb8 images convert, with cv2 unimportable; other encodings still need it.
    code = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'cv2':
            raise ImportError('no OpenCV')
sys.meta_path.insert(0, _Block())
import metric_solver_ros.node
from types import SimpleNamespace
from metric_solver_ros.conversions import image_to_rgb
msg = SimpleNamespace(height=2, width=3, step=9, encoding='rgb8', data=bytes(range(18)))
assert image_to_rgb(msg).shape == (2, 3, 3)
try:
    image_to_rgb(SimpleNamespace(**{**vars(msg), 'encoding': 'bgr8'}))
except ImportError:
    print('bgr8 needs OpenCV')
"""
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'bgr8 needs OpenCV'
