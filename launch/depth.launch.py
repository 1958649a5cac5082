"""Start the metric_solver depth node on a camera.

    ros2 launch metric_solver_ros depth.launch.py camera:=/camera/color device:=cuda

Arguments: ``camera`` (namespace of the camera topics), ``image`` / ``camera_info`` (topic names
under it), ``namespace`` (of the node and its outputs), ``params_file`` (defaults to the installed
config/depth.yaml), ``device``, ``checkpoint``, ``image_transport``, ``use_sim_time`` (each, when
given, overrides the params file; empty, the default: the params file decides; ``use_sim_time:=
true`` when replaying a bag with ``--clock``), ``large_data`` (Fast DDS
LARGE_DATA transport for this node; best-effort images larger than a UDP datagram are otherwise
lost, see the README), ``lifecycle`` (``true``: the managed node ``depth_lifecycle_node``, which
starts unconfigured), ``rviz`` (``true``: rviz2 with config/depth.rviz, when installed) and
``rviz_frame`` (its fixed frame: the camera's optical frame).
"""

import os
import tempfile

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    LogInfo,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

#: Node parameters that launch arguments of the same name can set, with their types.
LAUNCH_PARAMETERS = {'device': str, 'checkpoint': str, 'image_transport': str,
                     'use_sim_time': bool}
#: The node's executables by the ``lifecycle`` argument.
EXECUTABLES = {False: 'depth_node', True: 'depth_lifecycle_node'}
#: The namespace config/depth.rviz's topics are written for (the ``namespace`` default).
RVIZ_NAMESPACE = 'depth'
RVIZ_MISSING = ('rviz:=true, but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2): '
                'the node runs without it')


def flag(value, name):
    """A boolean launch argument's value ('true' / 'false' / '1' / '0', any case)."""
    text = value.strip().lower()
    if text not in ('true', 'false', '1', '0'):
        raise ValueError(f'launch argument {name} must be true or false, got {value!r}')
    return text in ('true', '1')


def node_executable(lifecycle):
    """The node's executable for the ``lifecycle`` launch argument's value."""
    return EXECUTABLES[flag(lifecycle, 'lifecycle')]


def rviz_config(text, namespace, fixed_frame):
    """config/depth.rviz for the node's ``namespace`` and the camera's ``fixed_frame``.

    The file names the topics under :data:`RVIZ_NAMESPACE`; they move to ``namespace``.
    """
    config = yaml.safe_load(text)
    manager = config['Visualization Manager']
    ns = namespace.strip('/')
    old, new = f'/{RVIZ_NAMESPACE}/', f'/{ns}/' if ns else '/'
    for display in manager['Displays']:
        topic = display.get('Topic', {})
        if str(topic.get('Value', '')).startswith(old):
            topic['Value'] = new + topic['Value'][len(old):]
    manager['Global Options']['Fixed Frame'] = fixed_frame
    return yaml.safe_dump(config, sort_keys=False)


def node_parameters(params_file, arguments, typed):
    """The node's parameter sources: the params file, then the launch arguments given.

    Later entries win, so a given argument overrides the file; an empty one is left out (the
    file, else the node's default, decides; an empty string would also not be a valid launch
    parameter: launch_ros reads '' as YAML null).

    Args:
        params_file: The parameter file (path or substitution).
        arguments: Launch argument values by parameter name ('' = not given).
        typed: ``typed(name, type)`` gives the argument ``name`` as a value of that parameter
            type (a ParameterValue of its substitution: a path stays a string, 'true' becomes
            a bool).

    Returns:
        The ``parameters`` list of the Node action.
    """
    given = {name: typed(name, LAUNCH_PARAMETERS[name]) for name, value in arguments.items()
             if value != ''}
    return [params_file, given] if given else [params_file]


def _launch_node(context):
    camera, image = LaunchConfiguration('camera'), LaunchConfiguration('image')
    arguments = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_PARAMETERS}
    return [Node(
        package='metric_solver_ros',
        executable=node_executable(LaunchConfiguration('lifecycle').perform(context)),
        name='metric_solver',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=node_parameters(LaunchConfiguration('params_file'), arguments,
                                   # a substitution: value_type only coerces substitutions
                                   lambda name, kind: ParameterValue(LaunchConfiguration(name),
                                                                     value_type=kind)),
        # `image` only: the node subscribes to `<resolved image>/compressed` for compressed
        remappings=[
            ('image', [camera, '/', image]),
            ('camera_info', [camera, '/', LaunchConfiguration('camera_info')]),
        ],
    )]


def _launch_rviz(context):
    if not flag(LaunchConfiguration('rviz').perform(context), 'rviz'):
        return []
    try:
        get_package_share_directory('rviz2')
    except PackageNotFoundError:
        return [LogInfo(msg=RVIZ_MISSING)]
    share = get_package_share_directory('metric_solver_ros')
    with open(os.path.join(share, 'config', 'depth.rviz')) as file:
        text = rviz_config(file.read(), LaunchConfiguration('namespace').perform(context),
                           LaunchConfiguration('rviz_frame').perform(context))
    with tempfile.NamedTemporaryFile('w', prefix='metric_solver_', suffix='.rviz',
                                     delete=False) as file:
        file.write(text)
    return [Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 arguments=['-d', file.name])]


def generate_launch_description():
    """Return the launch description (arguments, environment, the node)."""
    share = get_package_share_directory('metric_solver_ros')
    args = [
        DeclareLaunchArgument('camera', default_value='/camera/color',
                              description='Namespace of the camera topics'),
        DeclareLaunchArgument('image', default_value='image_raw',
                              description='Image topic under the camera namespace'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='Camera info topic under the camera namespace'),
        DeclareLaunchArgument('namespace', default_value='depth',
                              description='Namespace of the node and its outputs'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'depth.yaml'),
                              description='Parameter file'),
        DeclareLaunchArgument('device', default_value='',
                              description='auto | cuda | cpu; empty = from params_file'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description='Model file; empty = from params_file (there empty = '
                                          'the bundled default model)'),
        DeclareLaunchArgument('image_transport', default_value='',
                              description='raw | compressed; empty = from params_file'),
        DeclareLaunchArgument('use_sim_time', default_value='',
                              description='true: use /clock (bag replay); empty = from '
                                          'params_file (else false)'),
        DeclareLaunchArgument('large_data', default_value='true',
                              description='Use Fast DDS LARGE_DATA transport for this node'),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='true: the lifecycle node depth_lifecycle_node '
                                          '(starts unconfigured; configure and activate it)'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='true: start rviz2 with config/depth.rviz'),
        DeclareLaunchArgument('rviz_frame', default_value='camera_color_optical_frame',
                              description='RViz fixed frame: the frame_id of the camera images'),
    ]
    large_data = SetEnvironmentVariable('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA',
                                        condition=IfCondition(LaunchConfiguration('large_data')))
    return LaunchDescription([*args, large_data, OpaqueFunction(function=_launch_node),
                              OpaqueFunction(function=_launch_rviz)])
