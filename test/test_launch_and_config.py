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


def _launch_definitions() -> dict:
    """LAUNCH_PARAMETERS and node_parameters of the launch file, without launch installed."""
    tree = ast.parse(LAUNCH.read_text())
    wanted = [n for n in tree.body
              if (isinstance(n, ast.FunctionDef) and n.name == 'node_parameters')
              or (isinstance(n, ast.Assign) and n.targets[0].id == 'LAUNCH_PARAMETERS')]
    namespace: dict = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(LAUNCH), 'exec'), namespace)
    return namespace


def test_launch_arguments_override_the_params_file_only_when_given():
    # An empty launch argument (the default) must leave the parameter to the params file: an
    # always-passed default overrode what users wrote there, and launch_ros reads '' as null
    # (a TypeError before the node starts).
    launch = _launch_definitions()
    types = launch['LAUNCH_PARAMETERS']
    ours = set(types) - {'use_sim_time'}  # rclpy's own, a bool
    assert ours and ours <= set(SPECS) and types['use_sim_time'] is bool
    assert all(SPECS[name].read_only and type(SPECS[name].default) is types[name]
               for name in ours)
    build = launch['node_parameters']
    assert build('depth.yaml', dict.fromkeys(types, ''), lambda n, t: n) == ['depth.yaml']
    given = build('depth.yaml', {**dict.fromkeys(types, ''), 'device': 'cuda',
                                 'use_sim_time': 'true'}, lambda n, t: (n, t.__name__))
    # after the file: they win; each as its argument's substitution with the parameter's type
    # (launch_ros' ParameterValue coerces only substitutions: a plain 'true' with value_type
    # bool is a TypeError)
    assert given == ['depth.yaml', {'device': ('device', 'str'),
                                    'use_sim_time': ('use_sim_time', 'bool')}]
    assert re.search(r'ParameterValue\(LaunchConfiguration\(name\),\s*value_type=kind\)',
                     LAUNCH.read_text())
    tree = ast.parse(LAUNCH.read_text())
    defaults = {ast.literal_eval(c.args[0]): ast.literal_eval(_kwargs(c)['default_value'])
                for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, 'id', None) == 'DeclareLaunchArgument'
                and isinstance(_kwargs(c)['default_value'], ast.Constant)}
    assert all(defaults[name] == '' for name in types), defaults


def test_params_file_lists_every_parameter_with_its_default():
    document = yaml.safe_load((REPO / 'config' / 'depth.yaml').read_text())
    params = document['/**']['ros__parameters']
    declared = {spec.name for spec in PARAMETERS}
    assert set(params) == declared, set(params) ^ declared
    for spec in PARAMETERS:
        value = params[spec.name]
        expected = spec.default
        assert value == expected and type(value) is type(expected), (spec.name, value)
