"""The ROS 2 side: the only place that imports rclpy and ROS messages.

- :mod:`.localizer_node`: the ``s2dhm_localizer`` nodes (console scripts ``localizer_node``,
  ``lifecycle_localizer_node``), adapters over :class:`ros2_s2dhm.service.LocalizationService`;
- :mod:`.parameters`: the node parameters and their descriptors, from the option declarations;
- :mod:`.transport`: the middleware configuration for large camera frames;
- :mod:`.process`: start-up and shutdown of the package's ROS processes;
- :mod:`.conversions`: messages <-> library types (images, CameraInfo, poses, covariance);
- :mod:`.pose_recorder`: pose messages -> submission-file entries (``record_poses``);
- :mod:`.bags`, :mod:`.bag_player`: rosbag2 writing, reading and replay.

Submodules are imported explicitly; importing this package imports nothing from ROS.
"""
