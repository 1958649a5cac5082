"""Start the metric_solver depth node on a camera.

    ros2 launch metric_solver_ros depth.launch.py camera:=/camera/color device:=cuda

Arguments: ``camera`` (namespace of the camera topics), ``image`` / ``camera_info`` (topic names
under it), ``namespace`` (of the node and its outputs), ``params_file`` (defaults to the installed
config/depth.yaml), ``device``, ``checkpoint``, ``image_transport``, ``use_sim_time`` (each, when
given, overrides the params file; empty, the default: the params file decides; ``use_sim_time:=
true`` when replaying a bag with ``--clock``), ``large_data`` (Fast DDS
LARGE_DATA transport for this node; best-effort images larger than a UDP datagram are otherwise
lost, see the README).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

#: Node parameters that launch arguments of the same name can set, with their types.
LAUNCH_PARAMETERS = {'device': str, 'checkpoint': str, 'image_transport': str,
                     'use_sim_time': bool}


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
        executable='depth_node',
        name='metric_solver',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=node_parameters(LaunchConfiguration('params_file'), arguments,
                                   # a substitution: value_type only coerces substitutions
                                   lambda name, kind: ParameterValue(LaunchConfiguration(name),
                                                                     value_type=kind)),
        remappings=[
            ('image', [camera, '/', image]),
            ('image/compressed', [camera, '/', image, '/compressed']),
            ('camera_info', [camera, '/', LaunchConfiguration('camera_info')]),
        ],
    )]


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
    ]
    large_data = SetEnvironmentVariable('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA',
                                        condition=IfCondition(LaunchConfiguration('large_data')))
    return LaunchDescription([*args, large_data, OpaqueFunction(function=_launch_node)])
