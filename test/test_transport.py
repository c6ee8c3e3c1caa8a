"""The node's middleware transport choice (ros2_s2dhm/ros/transport.py): which profile for
which environment, what is left alone, the shipped Fast DDS profiles' settings, the rmem_max
warning. No ROS needed; the process test in test_ros_processes.py checks the frames arrive."""
import xml.etree.ElementTree as ET

import pytest

from ros2_s2dhm.ros.transport import (LOCALHOST_PROFILE, PROFILE, SOCKET_BUFFER_BYTES,
                                      apply_transport, choose_transport, socket_buffer_warning)

NS = {"f": "http://www.eprosima.com"}


def test_default_environment_gets_the_camera_frames_profile():
    env = {}
    choice = apply_transport(env)
    assert choice.applied == PROFILE
    assert env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    assert "camera frames" in choice.summary()


@pytest.mark.parametrize("scope", ["SUBNET", "SYSTEM_DEFAULT", ""])
def test_subnet_and_system_default_keep_their_discovery(scope):
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": scope, "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    choice = apply_transport(env)
    assert choice.applied == PROFILE
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == scope  # unchanged


def test_localhost_becomes_the_localhost_profile():
    """rmw_fastrtps replaces a LOCALHOST participant's transports: the node runs with
    SYSTEM_DEFAULT and a profile that keeps discovery and data on 127.0.0.1."""
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    choice = apply_transport(env)
    assert choice.applied == LOCALHOST_PROFILE
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SYSTEM_DEFAULT"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(LOCALHOST_PROFILE)


@pytest.mark.parametrize("env, why", [
    ({"S2DHM_TRANSPORT": "middleware"}, "S2DHM_TRANSPORT=middleware"),
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, "rmw_cyclonedds_cpp"),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}, "FASTDDS_DEFAULT_PROFILES_FILE"),
    ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}, "FASTRTPS_DEFAULT_PROFILES_FILE"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, "FASTDDS_BUILTIN_TRANSPORTS"),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"}, "OFF"),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": "10.0.0.2"}, "STATIC"),
    ({"S2DHM_TRANSPORT": "fast"}, "not one of"),
])
def test_user_configuration_is_left_alone(env, why):
    before = dict(env)
    choice = apply_transport(env)
    assert choice.applied is None and env == before
    assert why in choice.reason and "middleware defaults" in choice.summary()


@pytest.mark.parametrize("profile, localhost", [(PROFILE, False), (LOCALHOST_PROFILE, True)])
def test_profiles_offer_udp_only_with_large_buffers(profile, localhost):
    root = ET.parse(profile).getroot()
    (descriptor,) = root.findall("f:transport_descriptors/f:transport_descriptor", NS)
    assert descriptor.find("f:type", NS).text == "UDPv4"  # no shared-memory locator
    for name in ("receiveBufferSize", "sendBufferSize"):
        assert int(descriptor.find(f"f:{name}", NS).text) == SOCKET_BUFFER_BYTES
    (participant,) = root.findall("f:participant", NS)
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find("f:rtps", NS)
    assert rtps.find("f:useBuiltinTransports", NS).text == "false"
    used = [t.text for t in rtps.findall("f:userTransports/f:transport_id", NS)]
    assert used == [descriptor.find("f:transport_id", NS).text]
    whitelist = [a.text for a in descriptor.findall("f:interfaceWhiteList/f:address", NS)]
    peers = [a.text for a in rtps.findall("f:builtin/f:initialPeersList//f:address", NS)]
    assert (whitelist, peers) == ((["127.0.0.1"], ["127.0.0.1"]) if localhost else ([], []))


def test_socket_buffer_warning(tmp_path):
    limit = tmp_path / "rmem_max"
    limit.write_text("212992\n")
    warning = socket_buffer_warning(limit)
    assert "212992" in warning and "sysctl -w net.core.rmem_max" in warning
    limit.write_text(f"{SOCKET_BUFFER_BYTES}\n")
    assert socket_buffer_warning(limit) is None
    assert socket_buffer_warning(tmp_path / "missing") is None
