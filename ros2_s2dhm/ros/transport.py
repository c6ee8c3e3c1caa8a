"""The middleware transport of the node's process, chosen so large camera frames arrive.

Measured on one host (Fast DDS, the ROS 2 default middleware, at its defaults): 0 of 10
best-effort 640x480 ``rgb8`` frames (0.9 MB, one a second) reached an idle subscriber, through
shared memory (a 512 KB segment per writer) or UDP (a 208 KB socket receive buffer); 320x240
frames and reliable pairs arrived. A best-effort sample is lost whole when one fragment is.

A camera driver is another process at its own defaults, so the fix has to live on the receiving
side: the node's participant offers no shared-memory locator (writers then send it frames over
UDP) and opens 4 MB socket buffers (``profiles/fastdds_camera_frames.xml``). Under
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` rmw_fastrtps replaces a participant's transports with
its own, so there the node runs with ``SYSTEM_DEFAULT`` and a profile that restricts discovery
and data to 127.0.0.1 as LOCALHOST does (``fastdds_camera_frames_localhost.xml``).

:func:`apply_transport` sets this up in ``os.environ`` before ``rclpy.init``; it leaves the
middleware untouched when the user configured Fast DDS (a profiles file or builtin transports),
runs another middleware, asked for static peers or no discovery, or set
``S2DHM_TRANSPORT=middleware``. No ROS import: it only reads and writes environment variables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: environment variable choosing the transport: ``camera_frames`` (default) or ``middleware``
TRANSPORT_ENV = "S2DHM_TRANSPORT"
TRANSPORTS = ("camera_frames", "middleware")
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
PROFILE = PROFILES_DIR / "fastdds_camera_frames.xml"
LOCALHOST_PROFILE = PROFILES_DIR / "fastdds_camera_frames_localhost.xml"
#: Fast DDS settings of the user's that the node must not override
FASTDDS_USER_SETTINGS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                         "FASTDDS_BUILTIN_TRANSPORTS", "RMW_FASTRTPS_USE_QOS_FROM_XML")
FASTDDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
#: the socket buffer the profiles ask for (bytes); the kernel caps it at net.core.rmem_max
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


@dataclass
class TransportChoice:
    """What :func:`apply_transport` did: ``applied`` profile (None: middleware untouched), why,
    and the environment variables it set."""

    applied: Path | None
    reason: str
    env: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        if self.applied is None:
            return f"transport: middleware defaults ({self.reason})"
        settings = ", ".join(f"{k}={v}" for k, v in self.env.items())
        return f"transport: {self.reason} ({settings})"


def choose_transport(environ) -> TransportChoice:
    """The transport for a process with these environment variables (nothing is changed)."""
    wanted = environ.get(TRANSPORT_ENV, "camera_frames") or "camera_frames"
    if wanted not in TRANSPORTS:
        return TransportChoice(None, f"{TRANSPORT_ENV}={wanted!r} is not one of "
                                     f"{', '.join(TRANSPORTS)}: left as configured")
    if wanted == "middleware":
        return TransportChoice(None, f"{TRANSPORT_ENV}=middleware")
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw not in FASTDDS_RMWS:
        return TransportChoice(None, f"RMW_IMPLEMENTATION={rmw}: configure its socket buffers "
                                     "for large frames yourself (see the README)")
    for name in FASTDDS_USER_SETTINGS:
        if environ.get(name):
            return TransportChoice(None, f"{name} is set: your Fast DDS configuration is used")
    scope = environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "") or "SUBNET"
    if scope == "LOCALHOST":
        if environ.get("ROS_STATIC_PEERS"):
            return TransportChoice(None, "LOCALHOST with ROS_STATIC_PEERS: left to rmw")
        return TransportChoice(LOCALHOST_PROFILE, "camera frames over UDP on 127.0.0.1 with large "
                                                  "socket buffers, no shared memory",
                               {"FASTDDS_DEFAULT_PROFILES_FILE": str(LOCALHOST_PROFILE),
                                "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"})
    if scope in ("SUBNET", "SYSTEM_DEFAULT"):
        return TransportChoice(PROFILE, "camera frames over UDP with large socket buffers, "
                                        "no shared memory",
                               {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)})
    return TransportChoice(None, f"ROS_AUTOMATIC_DISCOVERY_RANGE={scope}: left to rmw")


def apply_transport(environ=None) -> TransportChoice:
    """Choose the transport and set its variables in ``environ`` (``os.environ``: this
    process, before ``rclpy.init``)."""
    environ = os.environ if environ is None else environ
    choice = choose_transport(environ)
    environ.update(choice.env)
    return choice


def socket_buffer_warning(path: Path = RMEM_MAX) -> str | None:
    """A warning when the kernel caps socket receive buffers below what the profile asks for
    (frames larger than the cap may still be lost), None when it does not or cannot be read."""
    try:
        limit = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if limit >= SOCKET_BUFFER_BYTES:
        return None
    return (f"net.core.rmem_max is {limit} bytes: socket receive buffers are capped below the "
            f"{SOCKET_BUFFER_BYTES} the node asks for, so best-effort frames larger than about "
            f"{limit // 1024} KB may be lost; raise it: sudo sysctl -w "
            f"net.core.rmem_max={SOCKET_BUFFER_BYTES}")
