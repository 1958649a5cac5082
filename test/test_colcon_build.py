"""The package builds as a ROS 2 package with colcon against the wheel prefix (CI check).

This is what users do in a workspace (`colcon build`), run here against the ROS 2 wheels in the
virtual environment instead of a distro. The install space must hold the interfaces and our
Python package together, the launch/config files in share/, and the executables in lib/.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
VENV = pathlib.Path(sys.prefix)


@pytest.fixture(scope='module')
def install_space(tmp_path_factory):
    colcon = VENV / 'bin' / 'colcon'
    if not colcon.exists():
        pytest.fail(f'colcon missing from {VENV}: run `make setup`')
    work = tmp_path_factory.mktemp('colcon')
    # colcon builds what it finds under --base-paths: a copy of the package sources only.
    source = work / 'src' / 'metric_solver_ros'
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        '.venv', 'build', 'install', 'log', 'out', '.git', '__pycache__', '*.egg-info',
        '.pytest_cache', '.ruff_cache', '.hypothesis'))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               PATH=f'{VENV / "bin"}{os.pathsep}{os.environ["PATH"]}')
    result = subprocess.run(
        [str(colcon), '--log-base', str(work / 'log'), 'build', '--base-paths', str(work / 'src'),
         '--build-base', str(work / 'build'), '--install-base', str(work / 'install'),
         '--cmake-args',
         f'-DPython3_EXECUTABLE={sys.executable}', '-DBUILD_TESTING=OFF'],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work / 'install' / 'metric_solver_ros'


def test_share_and_lib_layout(install_space):
    share = install_space / 'share' / 'metric_solver_ros'
    assert (share / 'launch' / 'depth.launch.py').is_file()
    assert (share / 'config' / 'depth.yaml').is_file()
    assert (share / 'config' / 'depth.rviz').is_file()
    assert (share / 'package.xml').is_file()
    for executable in ('depth_node', 'depth_lifecycle_node', 'metric-solver'):
        path = install_space / 'lib' / 'metric_solver_ros' / executable
        assert path.is_file() and os.access(path, os.X_OK), path
    index = install_space / 'share' / 'ament_index' / 'resource_index' / 'packages'
    assert (index / 'metric_solver_ros').is_file()


def test_interfaces_and_package_import_from_the_install_space(install_space):
    purelib = pathlib.Path(sysconfig.get_paths()['purelib']).relative_to(VENV)
    site = install_space / purelib
    code = (
        'import metric_solver_ros, metric_solver_ros.msg as m, metric_solver_ros.srv as s\n'
        'import metric_solver_ros.engine, metric_solver_ros.node\n'
        'import metric_solver_ros.lifecycle_node\n'
        'print(metric_solver_ros.__file__); print(m.__file__); print(s.__file__)\n'
        'print(metric_solver_ros.engine.__file__)\n'
        'm.DepthInfo(anchor=2.0, redecoded=True); s.SetAnchor.Request(anchor=2.0)\n'
    )
    env = dict(os.environ, PYTHONPATH=str(site),
               LD_LIBRARY_PATH=f'{install_space / "lib"}{os.pathsep}'
                               f'{os.environ.get("LD_LIBRARY_PATH", "")}')
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                            text=True, timeout=120, cwd=install_space)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.split():
        assert line.startswith(str(site)), f'{line} was not imported from the install space'
