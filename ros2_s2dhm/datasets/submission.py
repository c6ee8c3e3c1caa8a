"""Pose files in the visuallocalization.net submission format.

One line per localized query: ``name qw qx qy qz tx ty tz`` with the world-to-camera
rotation as a unit quaternion (w, x, y, z) and the world-to-camera translation
(x_cam = R @ x_world + t). Names are ``camera/filename`` for RobotCar Seasons
(``rear/1417176458999821.jpg``) and the basename for Extended CMU Seasons.

Failed queries: the format has no way to say "not localized", and the evaluation
service counts a query that is absent from the file as not localized. A failed
query (entry ``None``) is therefore left out of the submission file, which stays
uploadable as it is; the evaluator lists every query, failures included, in its
per-query table (see :mod:`ros2_s2dhm.evaluation.run`) and counts failures as
misses in the recall. No placeholder pose is ever written.

Ground-truth files use the same format and are read with :func:`read_submission`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.geometry.pose import Pose

FIELDS = ("name", "qw", "qx", "qy", "qz", "tx", "ty", "tz")
_UNIT_TOLERANCE = 1e-3  # |‖q‖ - 1| above this is an error; below it Pose normalises q


def check_name(name: str, what: str = "query") -> str:
    """``name`` when it is one non-empty token (these files are whitespace-separated), else
    DatasetError naming ``what`` it is."""
    if not name or any(c.isspace() for c in name):
        raise DatasetError(f"{what} name {name!r} is empty or contains whitespace; names in "
                           "pose and pairs files must be single tokens such as 'rear/123.jpg'")
    return name


def format_pose_line(name: str, pose: Pose) -> str:
    """One submission line ``name qw qx qy qz tx ty tz`` (shortest exact float text)."""
    check_name(name)
    values = np.concatenate([pose.quaternion_wxyz(), np.asarray(pose.t, dtype=np.float64)])
    return name + " " + " ".join(repr(float(v)) for v in values)


def write_submission(path: str | Path, entries: Mapping[str, Pose | None]) -> int:
    """Write ``entries`` (query name -> pose, ``None`` for a failed query) to ``path``.

    Lines follow the order of ``entries``; failed queries are left out (see the module
    docstring). Parent folders are created. Returns the number of pose lines written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [format_pose_line(name, pose) for name, pose in entries.items() if pose is not None]
    path.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def _parse_float(path: Path, lineno: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: field '{field}' is {text!r}, expected a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{lineno}: field '{field}' is {text!r}, expected a finite number")
    return value


def parse_pose_line(path: Path, lineno: int, line: str) -> tuple[str, Pose]:
    """Parse one ``name qw qx qy qz tx ty tz`` line; errors name ``path``, ``lineno`` and the field."""
    tokens = line.split()
    if len(tokens) != len(FIELDS):
        raise DatasetError(
            f"{path}:{lineno}: expected {len(FIELDS)} fields '{' '.join(FIELDS)}', "
            f"found {len(tokens)}: {line.strip()!r}")
    values = [_parse_float(path, lineno, field, text) for field, text in zip(FIELDS[1:], tokens[1:])]
    q = np.array(values[:4], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > _UNIT_TOLERANCE:
        raise DatasetError(f"{path}:{lineno}: fields 'qw qx qy qz' have norm {norm:.6g}, "
                           "expected a unit quaternion (w, x, y, z)")
    return tokens[0], Pose.from_quaternion(q, np.array(values[4:], dtype=np.float64))


def read_submission(path: str | Path) -> dict[str, Pose]:
    """Read a submission or ground-truth file into ``{name: world-to-camera Pose}``.

    Blank lines and lines starting with ``#`` are skipped. A malformed line, a
    non-unit quaternion or a repeated name raises :class:`DatasetError` naming the
    file, the line number and the field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the pose file ({err.strerror})") from err
    poses: dict[str, Pose] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, pose = parse_pose_line(path, lineno, line)
        if name in poses:
            raise DatasetError(f"{path}:{lineno}: field 'name' {name!r} repeats line {first_line[name]}")
        poses[name] = pose
        first_line[name] = lineno
    return poses
