"""ros2_s2dhm: S2DHM-style 6-DoF visual localization; the library does not import ROS outside `ros/`."""
