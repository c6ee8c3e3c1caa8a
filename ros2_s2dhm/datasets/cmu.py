"""Extended CMU Seasons slices: ``sliceN/database/*.jpg``, ``sliceN/query/*.jpg``, ``sliceN/sparse/``.

References are the registered images of the COLMAP model in ``sparse/`` (or ``sparse/0``), read
with pycolmap; queries are ``query/*.jpg``, whose cameras are the dataset's two calibrated
OPENCV cameras, ``c0`` and ``c1`` by the file name (values of the dataset README, as used by
S2DHM, hloc and pixloc; COLMAP pixel convention). Query names are the basenames, as the
evaluation service expects.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..geometry.camera import Camera
from ..geometry.pose import Pose
from .base import Dataset, QueryImage, ReferenceImage, image_size
from .query_list import read_query_list

log = logging.getLogger(__name__)

__all__ = ["CMU_QUERY_CAMERAS", "load_cmu_slice", "cmu_query_camera", "read_colmap_references",
           "find_colmap_model"]

CMU_QUERY_CAMERAS: dict[str, tuple[str, int, int, tuple[float, ...]]] = {
    "c0": ("OPENCV", 1024, 768, (868.993378, 866.063001, 525.942323, 420.042529,
                                 -0.399431, 0.188924, 0.000153, 0.000571)),
    "c1": ("OPENCV", 1024, 768, (873.382641, 876.489513, 529.324138, 397.272397,
                                 -0.397066, 0.181925, 0.000176, -0.000579)),
}
"""COLMAP-convention query cameras of Extended CMU Seasons, keyed by the ``_c0_``/``_c1_`` name tag."""


def cmu_query_camera(path: Path) -> Camera:
    """Camera of a CMU query image from its name (``..._c0_...`` or ``..._c1_...``) and image size."""
    tags = [tag for tag in CMU_QUERY_CAMERAS if f"_{tag}_" in path.name]
    if len(tags) != 1:
        raise DatasetError(f"{path}: query name must contain exactly one camera tag '_c0_' or '_c1_'")
    model, width, height, params = CMU_QUERY_CAMERAS[tags[0]]
    camera = Camera.from_colmap(model, width, height, params)
    w, h = image_size(path)
    if (w, h) != (width, height):
        camera = camera.scaled(w / width, h / height, width=w, height=h)
    return camera


def _colmap_to_opencv_pixels(xy: np.ndarray) -> np.ndarray:
    """COLMAP keypoints (top-left pixel centre at (0.5, 0.5)) -> OpenCV convention."""
    return np.asarray(xy, np.float64) - 0.5


def find_colmap_model(sparse: Path) -> Path:
    """``sparse`` or ``sparse/0``, whichever holds cameras.bin/.txt. Raises DatasetError."""
    for candidate in (sparse, sparse / "0"):
        if any((candidate / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return candidate
    raise DatasetError(f"{sparse}: no COLMAP model (cameras/images/points3D .bin or .txt) here or in 0/")


def read_colmap_references(model_dir: Path, images_dir: Path, keep_folders: bool = False
                           ) -> tuple[list[ReferenceImage], np.ndarray]:
    """References (registered images with their observations) and points [P, 3] of a COLMAP model.

    Point ids of the references index the returned points array (COLMAP ids are renumbered).
    Reference names are the model's basenames, or its names as they are with ``keep_folders``.
    """
    import pycolmap

    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as error:  # pycolmap raises plain exceptions on corrupt files
        raise DatasetError(f"{model_dir}: cannot read the COLMAP model ({error})") from None
    point_ids = sorted(rec.points3D.keys())
    index_of = {pid: i for i, pid in enumerate(point_ids)}
    points = np.array([rec.points3D[pid].xyz for pid in point_ids], np.float64).reshape(-1, 3)
    references = []
    for image_id in sorted(rec.images.keys()):
        image = rec.images[image_id]
        if not image.has_pose:
            continue
        path = images_dir / image.name
        if not path.is_file():
            path = images_dir / Path(image.name).name
        if not path.is_file():
            raise DatasetError(f"{model_dir}: image {image.name!r} of the model not found under {images_dir}")
        rigid = image.cam_from_world()
        pose = Pose(rigid.rotation.matrix(), np.asarray(rigid.translation))
        observed = [(p.xy, index_of[p.point3D_id]) for p in image.points2D if p.has_point3D()]
        xy = np.array([o[0] for o in observed], np.float64).reshape(-1, 2)
        ids = np.array([o[1] for o in observed], np.int64)
        camera = Camera.from_pycolmap(rec.cameras[image.camera_id])
        name = image.name if keep_folders else Path(image.name).name
        references.append(ReferenceImage(name, path, camera, pose,
                                         _colmap_to_opencv_pixels(xy), ids))
    return references, points


def load_cmu_slice(root: str | Path) -> Dataset:
    """Load one Extended CMU Seasons slice folder (``root`` = ``.../sliceN``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: CMU slice folder does not exist")
    references, points = read_colmap_references(find_colmap_model(root / "sparse"), root / "database")
    listed = root / "queries_with_intrinsics.txt"
    if listed.is_file():  # the cameras stated, names relative to query/
        queries = []
        for name, camera in read_query_list(listed):
            path = root / "query" / name
            if image_size(path) != (camera.width, camera.height):
                raise DatasetError(f"{listed}: query {name!r}: the image is "
                                   f"{'x'.join(map(str, image_size(path)))} but its camera says "
                                   f"{camera.width}x{camera.height}")
            queries.append(QueryImage(Path(name).name, path, camera, "query"))
        log.info("%s: %d query cameras from %s", root, len(queries), listed.name)
        return Dataset(root.name, root, references, points, queries)
    queries = []
    assumed: dict[str, int] = {}
    for path in sorted((root / "query").glob("*.jpg")):
        camera = cmu_query_camera(path)
        tag = next(t for t in CMU_QUERY_CAMERAS if f"_{t}_" in path.name)
        log.debug("query %s: assumed CMU camera %s (%s)", path.name, tag, camera)
        assumed[tag] = assumed.get(tag, 0) + 1
        queries.append(QueryImage(path.name, path, camera, "query"))
    if assumed:
        log.warning("%s: query cameras ASSUMED from the name tags: %s, CMU's calibrated OPENCV "
                    "cameras (%s); for other cameras write %s ('name MODEL W H params...')", root,
                    ", ".join(f"{n} x {t}" for t, n in sorted(assumed.items())),
                    "; ".join(f"{t}: fx {p[3][0]:.1f}, k1 {p[3][4]:.3f}"
                              for t, p in CMU_QUERY_CAMERAS.items()), listed)
    return Dataset(root.name, root, references, points, queries)
