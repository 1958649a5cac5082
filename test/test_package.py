"""The virtual environment holds a working ROS 2 + torch + our package and interfaces."""

import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_imports_rclpy_torch_package_and_interfaces():
    import rclpy
    import torch

    import metric_solver_ros
    from metric_solver_ros.msg import DepthInfo
    from metric_solver_ros.srv import SetAnchor

    assert rclpy.ok() in (True, False)
    assert torch.tensor([1.0]).sum().item() == 1.0
    info = DepthInfo(anchor=2.0, anchors=[2.0, 10.0], near_fraction=0.5)
    assert list(info.anchors) == [2.0, 10.0]
    assert SetAnchor.Request(anchor=4.0).anchor == 4.0
    response = SetAnchor.Response(success=False, message='outside the pool', anchor=2.0)
    assert response.message == 'outside the pool'
    # The checkout is the package: sources and generated modules merge in one namespace.
    assert pathlib.Path(metric_solver_ros.__file__).parent == REPO / 'metric_solver_ros'


def test_interface_fields_are_the_documented_ones():
    from metric_solver_ros.msg import DepthInfo
    from metric_solver_ros.srv import SetAnchor

    fields = DepthInfo.get_fields_and_field_types()
    for name, kind in [('header', 'std_msgs/Header'), ('anchor', 'float'),
                       ('anchors', 'sequence<float>'), ('near_fraction', 'float'),
                       ('min_depth', 'float'), ('median_depth', 'float'),
                       ('max_depth', 'float'), ('inference_ms', 'float'),
                       ('latency_ms', 'float'), ('redecoded', 'boolean')]:
        assert fields[name] == kind, name
    assert SetAnchor.Request.get_fields_and_field_types() == {'anchor': 'float'}
    assert SetAnchor.Response.get_fields_and_field_types() == {
        'success': 'boolean', 'message': 'string', 'anchor': 'float'}


def test_executables_are_on_the_venv_path():
    bin_dir = pathlib.Path(sys.executable).parent
    for name in ('depth_node', 'depth_lifecycle_node', 'metric-solver'):
        assert (bin_dir / name).is_file(), name
    result = subprocess.run([str(bin_dir / 'metric-solver'), '--help'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'convert' in result.stdout


def test_ruff_is_available():
    assert shutil.which('ruff', path=str(pathlib.Path(sys.executable).parent))
