"""The launch file and config/depth.yaml agree with the package, without a `launch` install."""

import ast
import pathlib
import re

import pytest
import yaml

from metric_solver_ros.parameters import SPECS, parameter_table

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'depth.launch.py'


def _node_call() -> ast.Call:
    """The Node action that starts this package's node (the other one is rviz2)."""
    tree = ast.parse(LAUNCH.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == 'Node'
             and ast.literal_eval(_kwargs(n)['package']) == 'metric_solver_ros']
    assert len(calls) == 1, 'the launch file starts exactly one node of this package'
    return calls[0]


def _kwargs(call: ast.Call) -> dict:
    return {k.arg: k.value for k in call.keywords}


def test_launch_starts_an_installed_executable_of_this_package():
    kwargs = _kwargs(_node_call())
    launch = _launch_definitions()
    assert ast.unparse(kwargs['executable']) == (
        "node_executable(LaunchConfiguration('lifecycle').perform(context))")
    entry_points = {'depth_node': 'metric_solver_ros.node:main',
                    'depth_lifecycle_node': 'metric_solver_ros.lifecycle_node:main'}
    assert set(launch['EXECUTABLES'].values()) == set(entry_points)
    for executable, entry_point in entry_points.items():
        # CMake installs it into lib/metric_solver_ros, setup.py as a console script.
        cmake = (REPO / 'CMakeLists.txt').read_text()
        assert re.search(rf'PROGRAMS[^)]*scripts/{executable}\b', cmake), executable
        script = REPO / 'scripts' / executable
        assert script.is_file() and script.stat().st_mode & 0o111, executable
        module = entry_point.split(':')[0]
        assert f'from {module} import main' in script.read_text()
        assert f"'{executable} = {entry_point}'" in (REPO / 'setup.py').read_text()
    from metric_solver_ros.node import NODE_NAME

    assert ast.literal_eval(kwargs['name']) == NODE_NAME
    node_executable = launch['node_executable']
    assert node_executable('false') == 'depth_node' and node_executable('0') == 'depth_node'
    assert node_executable('True') == 'depth_lifecycle_node'
    with pytest.raises(ValueError, match='lifecycle must be true or false'):
        node_executable('lifecycle')


def test_launch_loads_the_installed_params_file():
    source = LAUNCH.read_text()
    assert "os.path.join(share, 'config', 'depth.yaml')" in source
    assert re.search(r'install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)',
                     (REPO / 'CMakeLists.txt').read_text())


#: The launch file's parts that need no `launch` install (functions and constants).
PURE = {'node_parameters', 'LAUNCH_PARAMETERS', 'EXECUTABLES', 'flag', 'node_executable',
        'RVIZ_NAMESPACE', 'rviz_config'}


def _launch_definitions() -> dict:
    """The launch file's pure parts (:data:`PURE`), without launch installed."""
    tree = ast.parse(LAUNCH.read_text())
    wanted = [n for n in tree.body
              if (isinstance(n, ast.FunctionDef) and n.name in PURE)
              or (isinstance(n, ast.Assign) and n.targets[0].id in PURE)]
    assert {getattr(n, 'name', None) or n.targets[0].id for n in wanted} == PURE
    namespace: dict = {'yaml': yaml}
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
    declared = {spec.name for spec in parameter_table()}
    assert set(params) == declared, set(params) ^ declared
    for spec in parameter_table():
        value = params[spec.name]
        expected = spec.default
        assert value == expected and type(value) is type(expected), (spec.name, value)


def _rviz_topics(config: dict) -> dict[str, str]:
    """Topic -> display class of an RViz config."""
    return {d['Topic']['Value']: d['Class'] for d in config['Visualization Manager']['Displays']}


def test_rviz_config_shows_the_outputs_the_launch_file_produces():
    from metric_solver_ros.bagio import IMAGE, POINT_CLOUD2
    from metric_solver_ros.node_client import NODE_OUTPUTS

    config = yaml.safe_load((REPO / 'config' / 'depth.rviz').read_text())  # it parses
    tree = ast.parse(LAUNCH.read_text())
    defaults = {ast.literal_eval(c.args[0]): ast.literal_eval(_kwargs(c)['default_value'])
                for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, 'id', None) == 'DeclareLaunchArgument'
                and isinstance(_kwargs(c)['default_value'], ast.Constant)}
    launch = _launch_definitions()
    namespace = defaults['namespace']
    assert launch['RVIZ_NAMESPACE'] == namespace
    # the node's outputs (the topics the tests and tools receive from it) under the namespace
    # the launch file gives it, each shown by the display for its type
    displays = {'rviz_default_plugins/Image': IMAGE,
                'rviz_default_plugins/PointCloud2': POINT_CLOUD2}
    produced = {f'/{namespace}/{topic}': kind for topic, kind in NODE_OUTPUTS.values()}
    shown = _rviz_topics(config)
    assert set(shown) == {f'/{namespace}/{t}' for t in ('depth', 'anchor_mask', 'points')}
    for topic, display in shown.items():
        assert produced[topic] == displays[display], topic
    # rviz:=true moves them to the launch's namespace and sets the camera's frame
    moved = yaml.safe_load(launch['rviz_config']((REPO / 'config' / 'depth.rviz').read_text(),
                                                 '/robot/front/', 'front_optical'))
    assert set(_rviz_topics(moved)) == {t.replace(f'/{namespace}/', '/robot/front/')
                                        for t in shown}
    assert moved['Visualization Manager']['Global Options']['Fixed Frame'] == 'front_optical'
    source = LAUNCH.read_text()
    assert "get_package_share_directory('rviz2')" in source and 'RVIZ_MISSING' in source
    assert defaults['rviz'] == 'false' and defaults['lifecycle'] == 'false'
    assert re.search(r'install\(DIRECTORY launch config DESTINATION',
                     (REPO / 'CMakeLists.txt').read_text())  # the .rviz file is installed
