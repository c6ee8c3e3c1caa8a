"""Launch the s2dhm_localizer node.

    ros2 launch ros2_s2dhm localize.launch.py map_dir:=/data/map weights:=/data/s2dhm.pth \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info

Without ``ros2 launch`` (no launch_ros installed) the same node runs as a console script:

    localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/data/map \
        -r image:=/camera/image_raw -r camera_info:=/camera/camera_info
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "ros2_s2dhm"


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "localize.yaml")
    arguments = [
        DeclareLaunchArgument("map_dir", default_value="",
                              description="reference map directory (built by build_map)"),
        DeclareLaunchArgument("weights", default_value="default",
                              description="weights: default (shipped), random, or a file"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node parameters"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="input image topic; with use_compressed:=true the node "
                                          "subscribes <image_topic>/compressed"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="input CameraInfo topic"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="torch device: auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn, error"),
    ]
    node = Node(
        package=PACKAGE,
        executable="localizer_node",
        name="s2dhm_localizer",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "map_dir": LaunchConfiguration("map_dir"),
                "weights": LaunchConfiguration("weights"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[  # with use_compressed the node reads <image_topic>/compressed
            ("image", LaunchConfiguration("image_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*arguments, node])
