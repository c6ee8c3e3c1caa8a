"""Launch the s2dhm_localizer node.

    ros2 launch ros2_s2dhm localize.launch.py map_dir:=/data/map weights:=/data/s2dhm.pth \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info

Parameters come from ``params_file`` (default: the package's ``config/localize.yaml``); the
``map_dir``, ``weights``, ``device`` and ``use_sim_time`` arguments override it only when given
on the command line (a ``map_dir`` in your YAML is used otherwise).

``lifecycle:=true`` starts the managed node (``lifecycle_localizer_node``) instead, as nav2's
localization nodes are; with ``autostart:=true`` (default) this file configures it and, once
configured, activates it; with ``autostart:=false`` a lifecycle manager (e.g. nav2's, listing
``s2dhm_localizer`` in its ``node_names``) drives it.

``transport:=camera_frames`` (default) lets the node's Fast DDS participant take large frames
(see ``ros2_s2dhm/ros/transport.py``); ``transport:=middleware`` leaves the middleware as
configured.

Without ``ros2 launch`` (no launch_ros installed) the same nodes run as console scripts:

    localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/data/map \
        -r image:=/camera/image_raw -r camera_info:=/camera/camera_info
    lifecycle_localizer_node --ros-args ...   # then configure + activate it
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "ros2_s2dhm"
#: arguments that override params_file only when given (empty: the YAML's value)
OVERRIDES = {"map_dir": str, "weights": str, "device": str, "use_sim_time": bool}


def _nodes(context):
    """The node (plain or managed) with only the overrides the user gave."""
    value = {name: LaunchConfiguration(name).perform(context) for name in
             (*OVERRIDES, "params_file", "image_topic", "camera_info_topic", "namespace",
              "log_level", "lifecycle", "autostart", "transport")}
    overrides = {name: (value[name].lower() == "true" if kind is bool else value[name])
                 for name, kind in OVERRIDES.items() if value[name] != ""}
    common = dict(
        package=PACKAGE,
        name="s2dhm_localizer",
        namespace=value["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=[value["params_file"], overrides] if overrides else [value["params_file"]],
        remappings=[  # with use_compressed the node reads <image_topic>/compressed
            ("image", value["image_topic"]),
            ("camera_info", value["camera_info_topic"]),
        ],
        arguments=["--ros-args", "--log-level", value["log_level"]],
        # read by the node before the middleware starts (ros2_s2dhm/ros/transport.py)
        additional_env={"S2DHM_TRANSPORT": value["transport"]},
    )
    if value["lifecycle"].lower() != "true":
        return [Node(executable="localizer_node", **common)]
    managed = LifecycleNode(executable="lifecycle_localizer_node", **common)
    if value["autostart"].lower() != "true":
        return [managed]

    def change(transition):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                           transition_id=transition))
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=managed, goal_state="inactive",
        entities=[change(Transition.TRANSITION_ACTIVATE)]))
    return [managed, activate_when_configured, change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "localize.yaml")
    arguments = [
        DeclareLaunchArgument("map_dir", default_value="",
                              description="reference map directory (built by build_map); "
                                          "default: params_file's"),
        DeclareLaunchArgument("weights", default_value="",
                              description="weights: default (shipped), random, or a file; "
                                          "default: params_file's"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node parameters"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="input image topic; with use_compressed:=true the node "
                                          "subscribes <image_topic>/compressed"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="input CameraInfo topic"),
        DeclareLaunchArgument("device", default_value="",
                              description="torch device: auto, cpu, cuda, cuda:N; default: "
                                          "params_file's"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="use /clock (bag replay): true or false; default: "
                                          "params_file's (false)"),
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
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
