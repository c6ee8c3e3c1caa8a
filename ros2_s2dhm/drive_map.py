"""A site from a recorded drive: images with known poses -> a COLMAP layout with 3D points.

The poses come from elsewhere (SLAM, GNSS/INS, motion capture); what the map still needs are
3D points observed in the images. They are triangulated by COLMAP through pycolmap with the
poses held fixed: SIFT features (``extract_features``, one camera for all frames), matches
between neighbouring frames (``match_sequential``) or all pairs (``match_exhaustive``), two-view
verification, then ``triangulate_points`` on a reconstruction that holds the given poses. The
result is written as :mod:`ros2_s2dhm.datasets.colmap_layout` (``sparse/``, ``images/``,
``unit.txt``), which ``build_map`` reads like any other COLMAP model.

Pose files:
  * TUM (``timestamp tx ty tz qx qy qz qw``, seconds; matched to frames by stamp),
  * the project's own (``name qw qx qy qz tx ty tz``, a submission file; matched by name),
  each camera-to-world (what SLAM and TUM write) or world-to-camera, as stated.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CameraError, DatasetError
from .geometry.camera import Camera
from .geometry.pose import Pose
from .geometry.rotation import quat_wxyz_to_matrix, xyzw_to_wxyz

log = logging.getLogger(__name__)
CONVENTIONS = ("camera-to-world", "world-to-camera")
MATCHERS = ("sequential", "exhaustive")


@dataclass
class Frame:
    """One image of the drive: ``name`` (relative path in the site), its file and stamp."""

    name: str
    path: Path
    stamp_ns: int


def read_camera_line(text: str, where: str) -> Camera:
    """``MODEL WIDTH HEIGHT params...`` (COLMAP model and pixel convention) -> Camera."""
    tokens = text.split()
    try:
        return Camera.from_colmap(tokens[0].upper(), int(tokens[1]), int(tokens[2]),
                                  [float(v) for v in tokens[3:]])
    except (IndexError, ValueError, CameraError) as exc:
        raise DatasetError(f"{where}: expected 'MODEL WIDTH HEIGHT params...' (COLMAP), got "
                           f"{text.strip()!r} ({exc})") from None


def _as_world_to_camera(pose: Pose, convention: str) -> Pose:
    if convention not in CONVENTIONS:
        raise DatasetError(f"pose convention must be one of {CONVENTIONS}, got {convention!r}")
    return pose.inverse() if convention == "camera-to-world" else pose


def read_tum_poses(path: str | Path, convention: str = "camera-to-world"
                   ) -> list[tuple[int, Pose]]:
    """``[(stamp_ns, world-to-camera Pose)]`` sorted by stamp from a TUM trajectory file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: pose file not found")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != 8:
            raise DatasetError(f"{path}:{number}: expected 'timestamp tx ty tz qx qy qz qw' "
                               f"(TUM), got {len(tokens)} fields")
        try:
            values = [float(v) for v in tokens]
        except ValueError:
            raise DatasetError(f"{path}:{number}: non-numeric field in {line.strip()!r}") from None
        q = np.array(values[4:8])
        if not np.isclose(np.linalg.norm(q), 1.0, atol=1e-3):
            raise DatasetError(f"{path}:{number}: fields 'qx qy qz qw' are not a unit quaternion")
        pose = Pose(quat_wxyz_to_matrix(xyzw_to_wxyz(q / np.linalg.norm(q))), np.array(values[1:4]))
        out.append((int(round(values[0] * 1e9)), _as_world_to_camera(pose, convention)))
    if not out:
        raise DatasetError(f"{path}: no pose")
    return sorted(out, key=lambda item: item[0])


def poses_for_frames(frames: list[Frame], poses: list[tuple[int, Pose]],
                     max_time_diff_s: float) -> dict[str, Pose]:
    """The pose of each frame: the pose stamped nearest, when within ``max_time_diff_s``
    (frames without one are left out and counted in the log)."""
    stamps = np.array([s for s, _ in poses], np.int64)
    out = {}
    for frame in frames:
        i = int(np.searchsorted(stamps, frame.stamp_ns))
        best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)),
                   key=lambda j: abs(int(stamps[j]) - frame.stamp_ns))
        if abs(int(stamps[best]) - frame.stamp_ns) <= max_time_diff_s * 1e9:
            out[frame.name] = poses[best][1]
    if len(out) < len(frames):
        log.warning("%d of %d frames have no pose within %.3f s: left out",
                    len(frames) - len(out), len(frames), max_time_diff_s)
    return out


def triangulate_site(frames: list[Frame], poses: dict[str, Pose], camera: Camera, out: str | Path,
                     matcher: str = "sequential", overlap: int = 10, unit: str = "m") -> Path:
    """Write the COLMAP layout of the posed ``frames`` at ``out`` with triangulated points.

    ``camera``: the one camera of the drive (its image size must be the frames'). Returns ``out``.
    Raises DatasetError when fewer than two frames have poses or nothing can be triangulated.
    """
    import pycolmap  # noqa: PLC0415

    from .datasets.base import image_size  # noqa: PLC0415

    if matcher not in MATCHERS:
        raise DatasetError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
    frames = [f for f in frames if f.name in poses]
    if len(frames) < 2:
        raise DatasetError(f"{len(frames)} posed frame(s): at least two are needed")
    out = Path(out)
    if (out / "sparse").exists():
        raise DatasetError(f"{out / 'sparse'} exists already; choose another folder")
    images = out / "images"
    for frame in frames:
        target = images / frame.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(frame.path, target)
    width, height = image_size(images / frames[0].name)
    if (width, height) != (camera.width, camera.height):
        raise DatasetError(f"the frames are {width}x{height} but the camera is "
                           f"{camera.width}x{camera.height}")
    database = out / "database.db"
    database.unlink(missing_ok=True)
    model, _, _, params = camera.to_colmap()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = model
    reader.camera_params = ",".join(repr(float(p)) for p in params)
    names = [f.name for f in frames]
    pycolmap.extract_features(database, images, image_names=names,
                              camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              device=pycolmap.Device.cpu)
    if matcher == "sequential":
        pycolmap.match_sequential(database, pairing_options=pycolmap.SequentialPairingOptions(
            overlap=overlap), device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
    rec = pycolmap.Reconstruction()
    db = pycolmap.Database.open(database)
    try:
        for cam in db.read_all_cameras():
            rec.add_camera_with_trivial_rig(cam)
        for image in db.read_all_images():
            pose = poses[image.name]
            rec.add_image_with_trivial_frame(
                pycolmap.Image(name=image.name, camera_id=image.camera_id, image_id=image.image_id),
                pycolmap.Rigid3d(pycolmap.Rotation3d(pose.R), pose.t))
    finally:
        db.close()
    sparse = out / "sparse"
    sparse.mkdir(parents=True)
    rec = pycolmap.triangulate_points(rec, database, images, sparse)
    if rec.num_points3D() == 0:
        raise DatasetError(f"no 3D point could be triangulated from {len(frames)} frames: do the "
                           f"images overlap, and are the poses and the camera right?")
    (out / "unit.txt").write_text(unit + "\n")
    log.info("site %s: %d frames, %d points triangulated (mean track %.1f)", out,
             rec.num_reg_images(), rec.num_points3D(), rec.compute_mean_track_length())
    return out
