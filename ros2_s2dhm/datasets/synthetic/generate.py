"""Synthetic RobotCar-Seasons-like dataset: traversals, rendering, 3D model, ground truth, correspondences.

Layout written under ``out_dir`` (as RobotCar Seasons):

- ``images/<condition>/rear/<timestamp_us>.jpg``
- ``intrinsics/rear_intrinsics.txt`` (``fx``, ``fy``, ``cx``, ``cy`` lines, COLMAP pixel convention)
- ``3D-models/all-merged/all.nvm`` (reference cameras and triangulated points)
- ``ground_truth.txt`` (queries, ``rear/<ts>.jpg qw qx qy qz tx ty tz``, world-to-camera)
- ``queries/<condition>_queries_with_intrinsics.txt`` (hloc query lists)
- ``correspondences/<condition>/<query_ts>_<reference_ts>.mat`` (exact pixel correspondences between
  the query (image j) and its nearest references (image i), names relative to ``images/``;
  ``dist_from_center`` is the distance in pixels of ``pt_i`` from the centre of image i)
- ``synthetic_info.json`` (seed, size preset, camera, counts)

The reference traversal drives along the street every ``reference_spacing`` metres with a rear
camera (looking back along -x); each query condition has its own traversal at random positions
with lateral, height and small rotation offsets, drawn from its own random stream so that
generating a subset of the conditions gives the same images, poses and timestamps. Each query
condition is another day: a fraction ``scene_changes`` of the parked cars is gone or moved
(:meth:`~.scene.Scene.with_changes`); the model and correspondences stay exact (the depth test
drops what changed).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ...errors import DatasetError
from ...geometry.camera import Camera
from ...geometry.pose import Pose
from ...geometry.rotation import euler_rpy_to_matrix
from ..correspondences import write_correspondences_mat
from ..query_list import write_query_list
from ..robotcar import NVMCamera, NVMModel, write_intrinsics, write_nvm
from .conditions import CONDITIONS, get_condition
from .raycast import pixel_rays
from .render import render_view
from .scene import Scene, make_scene

logger = logging.getLogger(__name__)

REFERENCE_CONDITION = "overcast-reference"
QUERY_CONDITIONS = ("dawn", "dusk", "night", "night-rain", "overcast-summer", "overcast-winter",
                    "rain", "snow", "sun")
CAMERA_NAME = "rear"
_BASE_TIMESTAMP_US = 1417176458999821
_DAY_US = 86_400_000_000


@dataclass(frozen=True)
class SyntheticSize:
    """Size knobs of a generated set."""

    width: int = 320
    height: int = 240
    length: float = 60.0                  # metres of street covered by the traversals
    reference_spacing: float = 1.5        # metres between reference images
    queries_per_condition: int = 6
    conditions: tuple = QUERY_CONDITIONS
    max_corners: int = 1500               # corners detected per reference image
    max_depth: float = 45.0               # metres; farther surface points are not triangulated
    track_window: int = 5                 # a point is observed at most this many images before/after its source
    correspondence_step: int = 4          # pixel grid step of the correspondences
    scene_changes: float = 0.5            # fraction of parked cars gone or moved in each query condition
    correspondence_references: int = 2    # nearest references paired with each query
    jpeg_quality: int = 95


SIZES: dict[str, SyntheticSize] = {
    "default": SyntheticSize(),
    "tiny": SyntheticSize(width=128, height=96, length=14.0, reference_spacing=2.0, queries_per_condition=2,
                          conditions=("sun", "dusk", "rain", "snow", "night"), max_corners=400,
                          correspondence_step=4, scene_changes=0.0, correspondence_references=1),
}


@dataclass
class SyntheticView:
    """One rendered image: its name relative to ``images/``, condition, pose and timestamp."""

    name: str
    condition: str
    pose: Pose
    timestamp: int


@dataclass
class SyntheticDataset:
    """What :func:`generate_synthetic` wrote (paths and poses) and how long it took."""

    root: Path
    camera: Camera
    scene: Scene
    references: list[SyntheticView]
    queries: list[SyntheticView]
    num_points: int
    num_correspondence_files: int
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


def default_camera(width: int = 320, height: int = 240) -> Camera:
    """Pinhole camera of the synthetic sets: fx = fy = 0.6 width, principal point slightly off centre."""
    f = 0.6 * width
    return Camera.from_pinhole(f, f, (width - 1) / 2 + 0.013 * width, (height - 1) / 2 - 0.008 * height,
                               width, height)


def street_pose(x: float, y: float = -0.8, z: float = 1.5, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                roll_deg: float = 0.0, backward: bool = True) -> Pose:
    """World-to-camera pose of a camera at (x, y, z) looking along -x (``backward``) or +x.

    ``yaw_deg`` turns left, ``pitch_deg`` looks up, ``roll_deg`` rolls clockwise (camera frame).
    """
    forward = np.array([-1.0, 0.0, 0.0]) if backward else np.array([1.0, 0.0, 0.0])
    down = np.array([0.0, 0.0, -1.0])
    R_level = np.stack([np.cross(down, forward), down, forward])  # rows: camera x, y, z in world
    # camera-frame rotation (camera x right, y down, z forward): pitch about x, yaw about -y, roll about z
    delta = euler_rpy_to_matrix(np.radians(pitch_deg), np.radians(-yaw_deg), np.radians(roll_deg))
    return Pose.from_center(delta.T @ R_level, [x, y, z])


def reference_traversal(size: SyntheticSize) -> list[Pose]:
    """Reference poses every ``reference_spacing`` metres along the street (lane y = -0.8 m)."""
    xs = np.arange(0.0, size.length + 1e-9, size.reference_spacing)
    return [street_pose(float(x)) for x in xs]


def query_traversal(size: SyntheticSize, rng: np.random.Generator) -> list[Pose]:
    """Query poses inside the reference stretch with lateral +-1 m, height, yaw and tilt offsets."""
    margin = size.reference_spacing
    xs = np.sort(rng.uniform(margin, size.length - margin, size.queries_per_condition))
    return [street_pose(float(x), y=-0.8 + rng.uniform(-1.0, 1.0), z=1.5 + rng.uniform(-0.1, 0.1),
                        yaw_deg=rng.uniform(-6, 6), pitch_deg=rng.uniform(-2, 2), roll_deg=rng.uniform(-1, 1))
            for x in xs]


def scene_of_condition(scene: Scene, condition: str, fraction: float) -> Scene:
    """The street as seen on the day of ``condition`` (parked cars changed with ``fraction``)."""
    if condition == REFERENCE_CONDITION or fraction <= 0:
        return scene
    return scene.with_changes(list(CONDITIONS).index(get_condition(condition).name) + 1, fraction)


def backproject(depth: np.ndarray, pose: Pose, camera: Camera, uv: np.ndarray) -> np.ndarray:
    """World points (N, 3) seen at integer pixels ``uv`` (N, 2) of a rendered depth map."""
    rays = pixel_rays(camera)[uv[:, 1], uv[:, 0]]
    z = depth[uv[:, 1], uv[:, 0]]
    return (rays * z[:, None] - pose.t) @ pose.R


def visible_in(points: np.ndarray, depth: np.ndarray, pose: Pose, camera: Camera,
               rel_tol: float = 0.01, abs_tol: float = 0.03):
    """Projections (N, 2) of world points into a view and whether they are seen (in image, depth-consistent)."""
    p_cam = pose.transform(points)
    uv, valid = camera.project_np(p_cam, check_bounds=False)
    inside = valid & (p_cam[:, 2] > 0.1) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) \
        & (uv[:, 0] <= camera.width - 1) & (uv[:, 1] <= camera.height - 1)
    seen = np.zeros(len(points), bool)
    idx = np.flatnonzero(inside)
    ui, vi = np.rint(uv[idx, 0]).astype(int), np.rint(uv[idx, 1]).astype(int)
    d = depth[vi, ui]
    seen[idx] = np.abs(d - p_cam[idx, 2]) < abs_tol + rel_tol * p_cam[idx, 2]
    return uv, seen


def triangulate_reference(names: list[str], images: list[np.ndarray], depths: list[np.ndarray],
                          poses: list[Pose], camera: Camera, size: SyntheticSize) -> NVMModel:
    """NVM model of the references: 3D points at image corners, observed (depth-tested) in >= 2 of them.

    Points come from exact depth at integer corner pixels of a source image; observations are their
    exact projections into the references within ``size.track_window`` images of the source (like
    SfM tracks, which do not span the whole street).
    """
    points, colors, source = [], [], []
    for i, (image, depth, pose) in enumerate(zip(images, depths, poses)):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        corners = cv2.goodFeaturesToTrack(gray, size.max_corners, 0.005, 2)
        if corners is None:
            continue
        uv = np.unique(np.rint(corners.reshape(-1, 2)).astype(int), axis=0)
        uv = uv[np.isfinite(depth[uv[:, 1], uv[:, 0]]) & (depth[uv[:, 1], uv[:, 0]] < size.max_depth)]
        points.append(backproject(depth, pose, camera, uv))
        colors.append(image[uv[:, 1], uv[:, 0]])
        source.append(np.full(len(uv), i))
    points, colors, source = map(np.concatenate, (points, colors, source))
    _, keep = np.unique(np.round(points / 0.01).astype(np.int64), axis=0, return_index=True)
    keep = np.sort(keep)
    points, colors, source = points[keep], colors[keep], source[keep]
    obs_point, obs_image, obs_uv = [], [], []
    for i, (depth, pose) in enumerate(zip(depths, poses)):
        uv, seen = visible_in(points, depth, pose, camera)
        idx = np.flatnonzero(seen & (np.abs(source - i) <= size.track_window))
        obs_point.append(idx)
        obs_image.append(np.full(len(idx), i))
        obs_uv.append(uv[idx])
    obs_point, obs_image, obs_uv = map(np.concatenate, (obs_point, obs_image, obs_uv))
    counts = np.bincount(obs_point, minlength=len(points))
    good = counts >= 2
    remap = np.cumsum(good) - 1
    sel = good[obs_point]
    focal = float(np.sqrt(camera.K[0, 0] * camera.K[1, 1]))
    cameras = [NVMCamera(name, focal, pose) for name, pose in zip(names, poses)]
    return NVMModel.from_pixels(cameras, [camera.size] * len(cameras), points[good], colors[good],
                                remap[obs_point[sel]], obs_image[sel], obs_uv[sel])


def pixel_correspondences(depth_q: np.ndarray, pose_q: Pose, depth_r: np.ndarray, pose_r: Pose,
                          camera: Camera, step: int):
    """Exact correspondences on a ``step`` pixel grid of the query: (uv_query (N, 2), uv_reference (N, 2))."""
    v, u = np.mgrid[step // 2:camera.height:step, step // 2:camera.width:step]
    uv = np.stack([u.ravel(), v.ravel()], axis=-1)
    uv = uv[np.isfinite(depth_q[uv[:, 1], uv[:, 0]])]
    points = backproject(depth_q, pose_q, camera, uv)
    uv_r, seen = visible_in(points, depth_r, pose_r, camera)
    return uv[seen].astype(np.float64), uv_r[seen]


def _write_image(path: Path, image: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise DatasetError(f"{path}: could not write image")


def generate_synthetic(out_dir: str | Path, seed: int = 0, size: str | SyntheticSize = "default",
                       conditions: list[str] | None = None, progress: bool = False) -> SyntheticDataset:
    """Render a synthetic RobotCar-Seasons-like dataset into ``out_dir`` (see the module docstring).

    ``seed`` fixes the scene, traversals and noise (held-out sets use another seed); ``size`` is a
    name of :data:`SIZES` or a :class:`SyntheticSize`; ``conditions`` overrides its query conditions.
    """
    start = time.perf_counter()
    if isinstance(size, str):
        if size not in SIZES:
            raise DatasetError(f"unknown synthetic size '{size}'; use one of {sorted(SIZES)}")
        size = SIZES[size]
    if conditions is not None:
        size = replace(size, conditions=tuple(conditions))
    for name in size.conditions:
        get_condition(name)  # DatasetError for unknown names, before anything is written
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    scene = make_scene(seed, length=size.length)
    camera = default_camera(size.width, size.height)
    rng = np.random.default_rng([seed, 1])
    iterator = _progress(progress)

    references, ref_images, ref_depths = [], [], []
    for i, pose in enumerate(iterator(reference_traversal(size), "reference")):
        ts = _BASE_TIMESTAMP_US + i * int(size.reference_spacing / 8.0 * 1e6)
        name = f"{REFERENCE_CONDITION}/{CAMERA_NAME}/{ts}.jpg"
        image, depth = render_view(scene, pose, camera, REFERENCE_CONDITION, rng)
        _write_image(root / "images" / name, image, size.jpeg_quality)
        references.append(SyntheticView(name, REFERENCE_CONDITION, pose, ts))
        ref_images.append(image)
        ref_depths.append(depth)

    model = triangulate_reference([f"./{r.name[:-4]}.png" for r in references], ref_images, ref_depths,
                                  [r.pose for r in references], camera, size)
    write_nvm(root / "3D-models" / "all-merged" / "all.nvm", model)
    write_intrinsics(root / "intrinsics" / f"{CAMERA_NAME}_intrinsics.txt", camera)

    queries, gt_lines, n_corr = [], [], 0
    centers = np.stack([r.pose.center for r in references])
    for condition in size.conditions:
        # per-condition streams and timestamps: a condition's queries do not depend on the others
        k = list(CONDITIONS).index(condition)
        rng = np.random.default_rng([seed, 2, k])
        day = scene_of_condition(scene, condition, size.scene_changes)
        base = _BASE_TIMESTAMP_US + (k + 1) * 7 * _DAY_US + 3_600_000_000
        cond_queries = []
        for i, pose in enumerate(iterator(query_traversal(size, rng), condition)):
            ts = base + i * 2_000_000
            name = f"{condition}/{CAMERA_NAME}/{ts}.jpg"
            image, depth = render_view(day, pose, camera, condition, rng)
            _write_image(root / "images" / name, image, size.jpeg_quality)
            view = SyntheticView(name, condition, pose, ts)
            cond_queries.append(view)
            q = pose.quaternion_wxyz()
            gt_lines.append(f"{CAMERA_NAME}/{ts}.jpg " + " ".join(f"{v:.10f}" for v in (*q, *pose.t)))
            nearest = np.argsort(np.linalg.norm(centers - pose.center, axis=1), kind="stable")
            for index in nearest[:size.correspondence_references]:
                ref = references[index]
                uv_q, uv_r = pixel_correspondences(depth, pose, ref_depths[index], ref.pose, camera,
                                                   size.correspondence_step)
                center = np.array([(camera.width - 1) / 2, (camera.height - 1) / 2])
                write_correspondences_mat(root / "correspondences" / condition / f"{ts}_{ref.timestamp}.mat",
                                          ref.name, name, uv_r, uv_q, np.linalg.norm(uv_r - center, axis=1))
                n_corr += 1
        write_query_list(root / "queries" / f"{condition}_queries_with_intrinsics.txt",
                         [(v.name, camera) for v in cond_queries])
        queries.extend(cond_queries)
    (root / "ground_truth.txt").write_text("\n".join(gt_lines) + "\n")
    info = {"generator": "ros2_s2dhm.datasets.synthetic", "seed": seed, "size": asdict(size),
            "camera": {"model": camera.model, "width": camera.width, "height": camera.height,
                       "params_opencv": camera.params.tolist()},
            "references": len(references), "queries": len(queries), "points": int(len(model.points))}
    (root / "synthetic_info.json").write_text(json.dumps(info, indent=2) + "\n")
    seconds = time.perf_counter() - start
    logger.info("synthetic set in %s: %d references, %d queries, %d points, %.1f s", root,
                len(references), len(queries), len(model.points), seconds)
    return SyntheticDataset(root, camera, scene, references, queries, len(model.points), n_corr, seconds,
                            {"observations": int(len(model.obs_point))})


def _progress(enabled: bool):
    if not enabled:
        return lambda items, desc: items
    from tqdm import tqdm
    return lambda items, desc: tqdm(items, desc=desc)
