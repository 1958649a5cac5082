"""The sample camera frames of the demo, the tests and the benchmarks (``demo.camera_sample``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metric_solver_ros import demo


@pytest.mark.skipif(not (demo.REALDATA / 'manifest.json').is_file(),
                    reason='this checkout has no ../shared/realdata')
def test_camera_sample_is_the_real_image_with_scaled_intrinsics():
    manifest = json.loads((demo.REALDATA / 'manifest.json').read_text())
    k = next(s for s in manifest['samples'] if s['id'] == demo.CAMERA_SAMPLE)['intrinsics']
    full, k_full, name = demo.camera_sample(640, 480)
    assert name == demo.CAMERA_SAMPLE and full.shape == (480, 640, 3) and full.dtype == np.uint8
    assert k_full == pytest.approx((k['fx'], k['fy'], k['cx'], k['cy']))
    quarter, k_quarter, _ = demo.camera_sample(160, 120)
    assert quarter.shape == (120, 160, 3)
    # a pixel-centre-correct scaling: u' + 0.5 = (u + 0.5) / 4
    assert k_quarter == pytest.approx((k['fx'] / 4, k['fy'] / 4, (k['cx'] + 0.5) / 4 - 0.5,
                                       (k['cy'] + 0.5) / 4 - 0.5))
    # the same picture: the quarter-size image is the area average of the full one
    np.testing.assert_allclose(quarter.mean((0, 1)), full.mean((0, 1)), atol=1.0)


def test_without_the_real_data_a_synthetic_scene_stands_in(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, 'REALDATA', tmp_path)  # a checkout without ../shared
    assert demo.realdata_images() == []
    rgb, (fx, fy, cx, cy), name = demo.camera_sample(84, 56, seed=3)
    assert name == 'synthetic_indoor_3' and rgb.shape == (56, 84, 3) and rgb.dtype == np.uint8
    assert fx > 0 and fy > 0 and 0 < cx < 84 and 0 < cy < 56
    again, _, _ = demo.camera_sample(84, 56, seed=3)
    np.testing.assert_array_equal(rgb, again)
    names = [name for name, _, _ in demo.demo_frames(4, height=56, width=84)]
    assert names == ['synthetic_indoor_1000', 'synthetic_indoor_1001', 'synthetic_outdoor_1002',
                     'synthetic_outdoor_1003']
