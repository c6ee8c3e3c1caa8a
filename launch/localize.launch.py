"""Launch the s2dhm_localizer node.

    ros2 launch ros2_s2dhm localize.launch.py map_dir:=/data/map weights:=/data/s2dhm.pth \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info

``lifecycle:=true`` starts the managed node (``lifecycle_localizer_node``) instead, as nav2's
localization nodes are; with ``autostart:=true`` (default) this file configures it and, once
configured, activates it; with ``autostart:=false`` a lifecycle manager (e.g. nav2's, listing
``s2dhm_localizer`` in its ``node_names``) drives it.

Without ``ros2 launch`` (no launch_ros installed) the same nodes run as console scripts:

    localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/data/map \
        -r image:=/camera/image_raw -r camera_info:=/camera/camera_info
    lifecycle_localizer_node --ros-args ...   # then configure + activate it
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

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
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="start the managed (lifecycle) node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle: configure and activate it here"),
        DeclareLaunchArgument("transport", default_value="camera_frames",
                              description="camera_frames: the node's Fast DDS participant takes "
                                          "frames over UDP with 4 MB socket buffers (large "
                                          "best-effort frames arrive); middleware: leave the "
                                          "middleware as configured"),
    ]
    lifecycle = LaunchConfiguration("lifecycle")
    common = dict(
        package=PACKAGE,
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
        # read by the node before the middleware starts (ros2_s2dhm/ros/transport.py)
        additional_env={"S2DHM_TRANSPORT": LaunchConfiguration("transport")},
    )
    node = Node(executable="localizer_node", condition=UnlessCondition(lifecycle), **common)
    managed = LifecycleNode(executable="lifecycle_localizer_node", condition=IfCondition(lifecycle),
                            **common)
    autostart = IfCondition(PythonExpression(["'", lifecycle, "' == 'true' and '",
                                              LaunchConfiguration("autostart"), "' == 'true'"]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                            transition_id=Transition.TRANSITION_CONFIGURE),
                          condition=autostart)
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=managed, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]),
        condition=autostart)
    return LaunchDescription([*arguments, node, managed, activate_when_configured, configure])
