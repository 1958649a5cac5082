"""Deterministic rosbag2 reading and writing with the `rosbags` library (no ROS install needed).

Both storage plugins are supported for reading and writing: ``mcap`` and ``sqlite3``
(rosbags 0.11 writes both; bags are written in rosbag2 metadata version 8). Readers take a bag
directory or a bare ``.mcap`` / ``.db3`` file. Messages are built and parsed with the ROS 2 Humble
type store; ``sensor_msgs/Image``, ``CompressedImage`` and ``CameraInfo`` are identical in every
ROS 2 distribution since Humble.

Time: every message has a *log time* (when the recorder received it; the bag's index) and a
*header stamp* (when the sensor captured it). Offline evaluation pairs messages by **header
stamp**, which does not depend on transport delays; a header stamp of exactly 0 (drivers that
leave it unset) falls back to the log time. Messages are read in the order the storage returns
them, which is log-time order (sqlite3 ``ORDER BY timestamp``, indexed MCAP merged by time).

Image decoding is the job of :mod:`metric_solver_ros.conversions`; this module only moves
messages in and out of bags and pairs them. ``metric-solver replay`` copies serialised messages
unchanged (:func:`raw_message_groups`, :class:`RawBagWriter`, :func:`recording_typestore`).

Modules: ``messages`` (type store, headers, message builders), ``write`` (bag writers,
RGB-D bags), ``read`` (readers, pairing). Every public name is importable from here.
"""

from metric_solver_ros.bagio.messages import (
    BAG_VERSION,
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    DEPTH_INFO,
    DEPTH_WRITE_ENCODINGS,
    IMAGE,
    POINT_CLOUD2,
    STORAGES,
    camera_info_msg,
    cdr_header_stamp_ns,
    depth_to_image_msg,
    get_typestore,
    header_stamp_ns,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)
from metric_solver_ros.bagio.read import (
    BAG_FILE_SUFFIXES,
    SyncedFrame,
    SyncedReader,
    SyncStats,
    check_topics,
    first_message,
    is_bag_folder,
    list_topics,
    pair_by_stamp,
    raw_message_groups,
    read_header_stamps,
    read_topics,
)
from metric_solver_ros.bagio.write import (
    BagWriter,
    RawBagWriter,
    depth_info_definition,
    recording_typestore,
    write_rgbd_bag,
)

__all__ = [
    'BAG_FILE_SUFFIXES',
    'BAG_VERSION',
    'BagWriter',
    'CAMERA_INFO',
    'COMPRESSED_IMAGE',
    'DEPTH_INFO',
    'DEPTH_WRITE_ENCODINGS',
    'IMAGE',
    'POINT_CLOUD2',
    'RawBagWriter',
    'STORAGES',
    'SyncStats',
    'SyncedFrame',
    'SyncedReader',
    'camera_info_msg',
    'cdr_header_stamp_ns',
    'check_topics',
    'depth_info_definition',
    'depth_to_image_msg',
    'first_message',
    'get_typestore',
    'header_stamp_ns',
    'is_bag_folder',
    'list_topics',
    'pair_by_stamp',
    'raw_message_groups',
    'read_header_stamps',
    'read_topics',
    'recording_typestore',
    'rgb_to_compressed_msg',
    'rgb_to_image_msg',
    'write_rgbd_bag',
]
