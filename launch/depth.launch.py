"""Start the metric_solver depth node on a camera.

    ros2 launch metric_solver_ros depth.launch.py camera:=/camera/color device:=cuda

Arguments: ``camera`` (namespace of the camera topics), ``image`` / ``camera_info`` (topic names
under it), ``params_file`` (defaults to the installed config/depth.yaml), ``device``,
``checkpoint``, ``image_transport``, ``large_data`` (Fast DDS LARGE_DATA transport for this node;
best-effort images larger than a UDP datagram are otherwise lost, see the README).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


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
        DeclareLaunchArgument('device', default_value='auto', description='auto | cuda | cpu'),
        DeclareLaunchArgument('checkpoint', default_value='',
                              description='Model file; empty = the bundled default model'),
        DeclareLaunchArgument('image_transport', default_value='raw',
                              description='raw | compressed'),
        DeclareLaunchArgument('large_data', default_value='true',
                              description='Use Fast DDS LARGE_DATA transport for this node'),
    ]
    camera, image = LaunchConfiguration('camera'), LaunchConfiguration('image')
    node = Node(
        package='metric_solver_ros',
        executable='depth_node',
        name='metric_solver',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=[
            LaunchConfiguration('params_file'),
            {
                'device': LaunchConfiguration('device'),
                'checkpoint': LaunchConfiguration('checkpoint'),
                'image_transport': LaunchConfiguration('image_transport'),
            },
        ],
        remappings=[
            ('image', [camera, '/', image]),
            ('image/compressed', [camera, '/', image, '/compressed']),
            ('camera_info', [camera, '/', LaunchConfiguration('camera_info')]),
        ],
    )
    large_data = SetEnvironmentVariable('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA',
                                        condition=IfCondition(LaunchConfiguration('large_data')))
    return LaunchDescription([*args, large_data, node])
