"""The ROS 2 side: the only place that imports rclpy and ROS messages.

- :mod:`.localizer_node`: the ``s2dhm_localizer`` node (console script ``localizer_node``);
- :mod:`.conversions`: messages <-> library types (images, CameraInfo, poses, covariance);
- :mod:`.pose_recorder`: pose messages -> submission-file entries (``record_poses``);
- :mod:`.bags`, :mod:`.bag_player`: rosbag2 writing, reading and replay.

Submodules are imported explicitly; importing this package imports nothing from ROS.
"""
