"""launch/localize.launch.py and config/localize.yaml.

The launch file runs against a stub of the launch API (recording stand-ins for its actions and
substitutions; the same on every machine, ROS installed or not): the arguments it declares,
the node it starts for given command-line arguments (overrides only for what was given),
the lifecycle autostart chain. Every parameter in the YAML is one the node declares (with the
same type), and the node starts from that YAML.
"""
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "localize.launch.py"
CONFIG = ROOT / "config" / "localize.yaml"
ARGUMENTS = {"map_dir", "weights", "params_file", "image_topic", "camera_info_topic", "device",
             "use_sim_time", "namespace", "log_level", "lifecycle", "autostart", "transport"}


def _yaml_parameters():
    data = yaml.safe_load(CONFIG.read_text())
    assert list(data) == ["s2dhm_localizer"]
    return data["s2dhm_localizer"]["ros__parameters"]


def test_yaml_parameters_are_declared_and_documented():
    from ros2_s2dhm.ros.localizer_node import PARAMETERS

    params = _yaml_parameters()
    assert set(params) == set(PARAMETERS), set(params) ^ set(PARAMETERS)
    for name, value in params.items():
        default = PARAMETERS[name].default
        assert type(value) is type(default), f"{name}: YAML {value!r} vs declared {default!r}"
        assert value == default, f"{name}: YAML {value!r} is not the default {default!r}"
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and line.startswith("    "):
            assert lines[i - 1].strip().startswith("#"), f"parameter without comment: {line}"


def test_yaml_is_generated_from_the_parameter_table():
    from ros2_s2dhm.ros.parameters import yaml_text

    assert CONFIG.read_text() == yaml_text(), (
        "config/localize.yaml is stale: python -m ros2_s2dhm.ros.parameters > "
        "config/localize.yaml")


def test_every_localizer_config_field_is_a_node_parameter():
    import dataclasses

    from ros2_s2dhm.localizer import LocalizerConfig
    from ros2_s2dhm.ros.parameters import PARAMETERS

    def leaves(cls, path=()):
        for f in dataclasses.fields(cls):
            value = getattr(cls(), f.name)
            if dataclasses.is_dataclass(value):
                yield from leaves(type(value), (*path, f.name))
            else:
                yield (*path, f.name)

    paths = {opt.path for opt in PARAMETERS.values() if opt.path}
    missing = [".".join(p) for p in leaves(LocalizerConfig) if p not in paths]
    assert not missing, f"LocalizerConfig fields without a node parameter: {missing}"
    assert len(paths) > 40


class _Recorded:
    """A stand-in for a launch action or substitution: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def _launch_stubs() -> dict:
    """Modules of the launch API the launch file imports, as recording stand-ins."""
    import types

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m
    return {
        "ament_index_python": module("ament_index_python"),
        "ament_index_python.packages": module(
            "ament_index_python.packages", get_package_share_directory=lambda pkg: f"/share/{pkg}"),
        "launch": module("launch", LaunchDescription=_Recorded),
        "launch.actions": module("launch.actions", **{n: type(n, (_Recorded,), {}) for n in (
            "DeclareLaunchArgument", "EmitEvent", "OpaqueFunction", "RegisterEventHandler")}),
        "launch.events": module("launch.events", matches_action=lambda action: ("match", action)),
        "launch.substitutions": module("launch.substitutions",
                                       LaunchConfiguration=_LaunchConfiguration),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=type("Node", (_Recorded,), {}),
                                     LifecycleNode=type("LifecycleNode", (_Recorded,), {})),
        "launch_ros.event_handlers": module("launch_ros.event_handlers",
                                            OnStateTransition=_Recorded),
        "launch_ros.events": module("launch_ros.events"),
        "launch_ros.events.lifecycle": module("launch_ros.events.lifecycle", ChangeState=_Recorded),
    }


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file run against a stub of the launch API: ``run(**args)`` -> the actions
    its OpaqueFunction returns for those command-line arguments (the rest at their defaults)."""
    for name, stub in _launch_stubs().items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("localize_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities
                if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]

    def run(**given):
        import types
        context = types.SimpleNamespace(launch_configurations={**declared, **given})
        return opaque.kwargs["function"](context)
    run.declared = declared
    return run


def test_launch_arguments_and_defaults(launch_file):
    assert set(launch_file.declared) == ARGUMENTS
    assert launch_file.declared["params_file"] == "/share/ros2_s2dhm/config/localize.yaml"
    (node,) = launch_file()
    assert type(node).__name__ == "Node" and node.kwargs["executable"] == "localizer_node"
    # nothing given: the YAML decides every parameter (no override restates a default)
    assert node.kwargs["parameters"] == [launch_file.declared["params_file"]]
    assert node.kwargs["remappings"] == [("image", "image"), ("camera_info", "camera_info")]
    assert node.kwargs["arguments"] == ["--ros-args", "--log-level", "info"]
    from ros2_s2dhm.ros.transport import TRANSPORT_ENV, TRANSPORTS

    assert node.kwargs["additional_env"] == {TRANSPORT_ENV: TRANSPORTS[0]}


def test_launch_passes_only_what_the_user_set(launch_file):
    (node,) = launch_file(map_dir="/data/map", use_sim_time="true", params_file="/my.yaml",
                          image_topic="/cam/image_raw", transport="middleware")
    assert node.kwargs["parameters"] == ["/my.yaml", {"map_dir": "/data/map",
                                                      "use_sim_time": True}]
    assert node.kwargs["remappings"][0] == ("image", "/cam/image_raw")
    assert node.kwargs["additional_env"]["S2DHM_TRANSPORT"] == "middleware"


def test_launch_lifecycle_autostart(launch_file):
    managed, handler, configure = launch_file(lifecycle="true")
    assert type(managed).__name__ == "LifecycleNode"
    assert managed.kwargs["executable"] == "lifecycle_localizer_node"
    from lifecycle_msgs.msg import Transition

    assert configure.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_CONFIGURE
    on_inactive = handler.args[0]
    assert on_inactive.kwargs["goal_state"] == "inactive"
    assert on_inactive.kwargs["target_lifecycle_node"] is managed
    (activate,) = on_inactive.kwargs["entities"]
    assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE
    assert activate.kwargs["event"].kwargs["lifecycle_node_matcher"] == ("match", managed)
    (alone,) = launch_file(lifecycle="true", autostart="false")  # a lifecycle manager drives it
    assert type(alone).__name__ == "LifecycleNode"


def test_launch_executables_and_data_files_are_installed():
    setup = (ROOT / "setup.py").read_text()
    assert "localizer_node = {PACKAGE}.ros.localizer_node:main" in setup
    assert "lifecycle_localizer_node = {PACKAGE}.ros.localizer_node:lifecycle_main" in setup
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert "ros/profiles/*.xml" in setup  # the transport profiles travel with the package
    assert importlib.util.find_spec("ros2_s2dhm.ros.localizer_node") is not None


def test_node_starts_from_the_yaml():
    """The console script's main() accepts the YAML (types match the declarations)."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(random.randint(1, 100)), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ros2_s2dhm.ros.localizer_node", "--ros-args", "--params-file",
         str(CONFIG), "-p", "max_rate_hz:=5.0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "ready:" in line:
                time.sleep(1.0)  # let it spin, then stop it like Ctrl-C does
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        output.append(rest or "")
    text = "".join(output)
    assert "ready:" in text, text
    assert "map_dir is empty" in text  # the shipped YAML has no map: the node says so
    assert "Traceback" not in text, text
