"""The launch file and config/depth.yaml agree with the package, without a `launch` install."""

import ast
import pathlib
import re

import yaml

from metric_solver_ros.parameters import PARAMETERS, SPECS

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'depth.launch.py'


def _node_call() -> ast.Call:
    tree = ast.parse(LAUNCH.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == 'Node']
    assert len(calls) == 1, 'the launch file starts exactly one Node'
    return calls[0]


def _kwargs(call: ast.Call) -> dict:
    return {k.arg: k.value for k in call.keywords}


def test_launch_starts_an_installed_executable_of_this_package():
    kwargs = _kwargs(_node_call())
    assert ast.literal_eval(kwargs['package']) == 'metric_solver_ros'
    executable = ast.literal_eval(kwargs['executable'])
    # CMake installs it into lib/metric_solver_ros, setup.py as a console script.
    cmake = (REPO / 'CMakeLists.txt').read_text()
    assert re.search(rf'PROGRAMS[^)]*scripts/{executable}\b', cmake), executable
    assert (REPO / 'scripts' / executable).is_file()
    assert f"'{executable} = metric_solver_ros.node:main'" in (REPO / 'setup.py').read_text()
    from metric_solver_ros.node import NODE_NAME

    assert ast.literal_eval(kwargs['name']) == NODE_NAME


def test_launch_loads_the_installed_params_file():
    source = LAUNCH.read_text()
    assert "os.path.join(share, 'config', 'depth.yaml')" in source
    assert re.search(r'install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)',
                     (REPO / 'CMakeLists.txt').read_text())


def test_launch_parameter_overrides_are_declared_parameters():
    parameters = _kwargs(_node_call())['parameters']
    overrides = [e for e in parameters.elts if isinstance(e, ast.Dict)]
    keys = {ast.literal_eval(k) for d in overrides for k in d.keys}
    assert keys and keys <= set(SPECS), keys - set(SPECS)


def test_params_file_lists_every_parameter_with_its_default():
    document = yaml.safe_load((REPO / 'config' / 'depth.yaml').read_text())
    params = document['/**']['ros__parameters']
    declared = {spec.name for spec in PARAMETERS}
    assert set(params) == declared, set(params) ^ declared
    for spec in PARAMETERS:
        value = params[spec.name]
        expected = spec.default
        assert value == expected and type(value) is type(expected), (spec.name, value)
