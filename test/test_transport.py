"""Large best-effort images cross processes in the DDS set-up our tests, demo and node use.

A 640x480 rgb8 image (921,600 bytes) is far larger than a UDP datagram: it arrives best-effort
only with Fast DDS's LARGE_DATA transport, and only when discovery is not limited to localhost
(which silently replaces that transport). The node warns about that combination at startup.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from metric_solver_ros.process_life import transport_warning

SUBSCRIBER = r'''
import sys, time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

rclpy.init()
node = rclpy.create_node('transport_probe_sub')
stamps = set()
node.create_subscription(Image, 'transport_probe', lambda m: stamps.add(m.header.stamp.sec),
                         qos_profile_sensor_data)
print('ready', flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and len(stamps) < int(sys.argv[2]):
    rclpy.spin_once(node, timeout_sec=0.05)
print('received', len(stamps), flush=True)
'''


def test_large_best_effort_images_arrive_across_processes(rclpy_context):
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    frames = 30
    sub = subprocess.Popen([sys.executable, '-c', SUBSCRIBER, '25', str(frames)],
                           stdout=subprocess.PIPE, text=True)
    node = rclpy.create_node('transport_probe_pub')
    try:
        assert sub.stdout.readline().strip() == 'ready'
        pub = node.create_publisher(Image, 'transport_probe', qos_profile_sensor_data)
        deadline = time.monotonic() + 15.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.get_subscription_count() == 1, 'subscriber never matched'
        time.sleep(1.0)  # let the match settle on both sides
        msg = Image(height=480, width=640, encoding='rgb8', step=640 * 3)
        msg.data = np.random.default_rng(0).integers(0, 255, 480 * 640 * 3, np.uint8).tobytes()
        for i in range(frames):
            msg.header.stamp.sec = i
            pub.publish(msg)
            time.sleep(0.1)
        out, _ = sub.communicate(timeout=40)
    finally:
        node.destroy_node()
        if sub.poll() is None:
            sub.kill()
    received = int(out.split()[-1])
    # best effort may drop a sample now and then; without LARGE_DATA (or with localhost-only
    # discovery) next to nothing arrives
    assert received >= frames * 0.9, f'{received} of {frames} 640x480 images arrived'
    assert transport_warning() is None


def test_transport_warning_names_the_combination_that_loses_images():
    assert transport_warning({'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}) is None
    assert transport_warning({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}) is None
    for localhost in ({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}, {'ROS_LOCALHOST_ONLY': '1'}):
        warning = transport_warning({'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA', **localhost})
        assert warning and 'LARGE_DATA' in warning and 'ROS_DOMAIN_ID' in warning
