"""Record the localizer's poses into a visuallocalization.net submission file.

A pose message carries the image stamp, not the image name the evaluator needs, so a
:class:`FrameNames` maps stamps (ns) to names:

* ``FrameNames.from_format("rear/{stamp_us}.jpg")``: RobotCar Seasons names are the µs
  timestamps the bag stamps come from (``make_bag`` sets ``stamp = timestamp_us * 1000``);
* ``FrameNames.from_file(path)``: lines ``<stamp_ns> <name>``, or just ``<name>`` when the
  name holds the µs timestamp (``rear/1417176458999821.jpg``,
  ``img_00122_c0_1303398474779487us.jpg``) — a query list works as is;
* ``FrameNames.from_bag(bag, image_topic, fmt)``: the stamps of the images in a bag (so the
  recorder knows which frames to expect), named with ``fmt``.

The recorder converts the camera-in-map pose back to world-to-camera (optionally undoing a
base frame) and writes ``name qw qx qy qz tx ty tz`` with
:func:`ros2_s2dhm.datasets.submission.write_submission` after every pose.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.datasets.submission import write_submission
from ros2_s2dhm.geometry.pose import Pose
from ros2_s2dhm.ros import conversions as conv

_TIMESTAMP_US = re.compile(r"(\d{13,19})(?:us)?(?=\D*$)")


def timestamp_us_from_name(name: str) -> int:
    """The µs timestamp in an image name's basename (last run of >= 13 digits)."""
    match = _TIMESTAMP_US.search(Path(name).name)
    if match is None:
        raise DatasetError(f"image name {name!r} holds no µs timestamp (13+ digits); give "
                           "'<stamp_ns> <name>' lines instead")
    return int(match.group(1))


@dataclass
class FrameNames:
    """stamp (ns) -> image name. ``expected``: the stamps of all frames when known."""

    names: dict[int, str] = field(default_factory=dict)
    fmt: str | None = None

    @property
    def expected(self) -> set[int]:
        return set(self.names)

    def name(self, stamp_ns: int) -> str | None:
        if stamp_ns in self.names:
            return self.names[stamp_ns]
        if self.fmt is not None:
            return format_name(self.fmt, stamp_ns)
        return None

    @classmethod
    def from_format(cls, fmt: str) -> "FrameNames":
        format_name(fmt, 0)  # validate the placeholders now
        return cls(fmt=fmt)

    @classmethod
    def from_file(cls, path: str | Path) -> "FrameNames":
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DatasetError(f"cannot read frame names {path}: {exc}") from exc
        names: dict[int, str] = {}
        for lineno, line in enumerate(lines, 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            try:
                if len(tokens) >= 2 and tokens[0].isdigit():
                    stamp, name = int(tokens[0]), tokens[1]
                else:  # a bare name or a query-list line 'name MODEL W H params...'
                    name = tokens[0]
                    stamp = timestamp_us_from_name(name) * 1000
            except DatasetError as exc:
                raise DatasetError(f"{path}:{lineno}: {exc}") from None
            names[stamp] = name
        return cls(names=names)

    @classmethod
    def from_bag(cls, bag: str | Path, image_topic: str, fmt: str) -> "FrameNames":
        from ros2_s2dhm.ros.bags import read_messages  # noqa: PLC0415

        names = {}
        for _, _, msg in read_messages(bag, [image_topic]):
            stamp = conv.stamp_to_ns(msg.header.stamp)
            names[stamp] = format_name(fmt, stamp)
        if not names:
            raise DatasetError(f"bag {bag} has no messages on {image_topic}")
        return cls(names=names, fmt=fmt)


def format_name(fmt: str, stamp_ns: int) -> str:
    """Fill ``{stamp_ns}``, ``{stamp_us}``, ``{sec}``, ``{nanosec}`` in ``fmt``."""
    try:
        return fmt.format(stamp_ns=stamp_ns, stamp_us=stamp_ns // 1000,
                          sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    except (KeyError, IndexError, ValueError) as exc:
        raise DatasetError(f"name format {fmt!r}: {exc!r}; use {{stamp_us}}, {{stamp_ns}}, "
                           "{sec}, {nanosec}") from None


@dataclass
class RecordedPose:
    name: str
    stamp_ns: int
    pose: Pose          # world-to-camera
    received_ns: int    # wall clock when received
    covariance_trace: float


class PoseCollector:
    """Turns pose messages into submission entries; ROS-free apart from the message fields."""

    def __init__(self, frame_names: FrameNames, output: str | Path,
                 base_to_camera: Pose | None = None):
        self.frame_names = frame_names
        self.output = Path(output)
        self.frame_in_camera = None if base_to_camera is None else base_to_camera.inverse()
        self.records: dict[str, RecordedPose] = {}
        self.unnamed: list[int] = []

    def add(self, msg) -> RecordedPose | None:
        """Record one ``PoseWithCovarianceStamped``; rewrite the file. None if unnamed."""
        stamp = conv.stamp_to_ns(msg.header.stamp)
        name = self.frame_names.name(stamp)
        if name is None:
            self.unnamed.append(stamp)
            return None
        pose = conv.ros_pose_to_world_to_camera(msg.pose.pose, self.frame_in_camera)
        trace = float(sum(msg.pose.covariance[i * 7] for i in range(6)))
        record = RecordedPose(name, stamp, pose, time.time_ns(), trace)
        self.records[name] = record
        self.write()
        return record

    def write(self) -> int:
        ordered = sorted(self.records.values(), key=lambda r: r.stamp_ns)
        return write_submission(self.output, {r.name: r.pose for r in ordered})

    def missing(self) -> list[int]:
        """Expected stamps (from a bag or file) without a pose."""
        seen = {r.stamp_ns for r in self.records.values()}
        return sorted(self.frame_names.expected - seen)
