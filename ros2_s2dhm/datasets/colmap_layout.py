"""Any COLMAP reconstruction as a dataset: the layout a robotics user has for their own site.

    DIR/sparse/                      a COLMAP model (cameras, images, points3D; .bin or .txt;
                                     or in sparse/0/), read with pycolmap: cameras of any COLMAP
                                     model, the registered images and their 2D-3D observations
    DIR/images/                      the images, named as in the model (sub-folders allowed)
    DIR/queries_with_intrinsics.txt  optional, hloc's format: ``name MODEL W H params...`` with
                                     names relative to DIR/images/ (COLMAP conventions)
    DIR/unit.txt                     optional: the model's unit of length in one word
                                     (``m`` when absent; an SfM model without scale may say
                                     ``sfm``); thresholds and distances are in it

References are the model's registered images. A query's camera is the one its line states and
must match the image's size; a query list without intrinsics is refused with the way to give
them: a camera is never guessed.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DatasetError
from .base import Dataset, QueryImage, image_size
from .cmu import find_colmap_model, read_colmap_references
from .query_list import read_query_list
from .submission import write_submission

__all__ = ["load_colmap_layout", "write_colmap_layout", "is_colmap_layout", "read_unit", "QUERY_LIST",
           "UNIT_FILE"]

log = logging.getLogger(__name__)
QUERY_LIST = "queries_with_intrinsics.txt"
UNIT_FILE = "unit.txt"
_NAMES_ONLY = ("queries.txt", "query_list.txt")


def is_colmap_layout(root: Path) -> bool:
    """``sparse/`` and ``images/`` side by side."""
    return (root / "sparse").is_dir() and (root / "images").is_dir()


def read_unit(root: Path) -> str:
    """The unit of length written in ``root/unit.txt`` (``m`` without the file)."""
    path = root / UNIT_FILE
    if not path.is_file():
        return "m"
    words = path.read_text().split()
    if len(words) != 1:
        raise DatasetError(f"{path}: expected one word (e.g. 'm' or 'sfm'), got {path.read_text()!r}")
    return words[0]


def _how_to_give_intrinsics(root: Path) -> str:
    return (f"write {root / QUERY_LIST} with one line per query: 'name MODEL WIDTH HEIGHT "
            f"params...' (hloc's format, COLMAP camera models and pixel convention), e.g. "
            f"'query/0001.jpg SIMPLE_RADIAL 640 480 525.0 319.5 239.5 0.01'")


def read_queries(root: Path, condition: str = "query") -> list[QueryImage]:
    """Queries of ``root/queries_with_intrinsics.txt`` (none without it); a query's condition
    is the first folder of its name (``condition`` for a name without one). Raises DatasetError
    for a query list without intrinsics, a missing image or a camera of another size."""
    path = root / QUERY_LIST
    if not path.is_file():
        for name in _NAMES_ONLY:
            if (root / name).is_file():
                raise DatasetError(f"{root / name}: a query list without intrinsics; the camera "
                                   f"of a query is never guessed: {_how_to_give_intrinsics(root)}")
        return []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if len(tokens) == 1 and not tokens[0].startswith("#"):
            raise DatasetError(f"{path}:{number}: query {tokens[0]!r} has no intrinsics; "
                               f"{_how_to_give_intrinsics(root)}")
    queries = []
    for name, camera in read_query_list(path):
        image = root / "images" / name
        width, height = image_size(image)
        if (width, height) != (camera.width, camera.height):
            raise DatasetError(f"{path}: query {name!r}: the image is {width}x{height} but its "
                               f"camera says {camera.width}x{camera.height}; fix field "
                               f"'WIDTH HEIGHT' (and scale the intrinsics with it)")
        queries.append(QueryImage(name, image, camera,
                                  name.split("/")[0] if "/" in name else condition))
    return queries


def load_colmap_layout(root: str | Path, warn_unit: bool = True) -> Dataset:
    """Load ``root`` laid out as in the module doc. ``warn_unit``: warn when the unit is not
    ``m`` (off for a caller that warns itself, with the bounds it uses, so a run warns once)."""
    root = Path(root)
    if not is_colmap_layout(root):
        raise DatasetError(f"{root}: not a COLMAP layout (needs sparse/ and images/)")
    references, points = read_colmap_references(find_colmap_model(root / "sparse"),
                                                root / "images", keep_folders=True)
    if not references:
        raise DatasetError(f"{root / 'sparse'}: the model has no registered image")
    queries = read_queries(root)
    reference_names = {r.name for r in references}
    clash = [q.name for q in queries if q.name in reference_names]
    if clash:
        log.warning("%d queries are also references of the model (e.g. %s): evaluate them with "
                    "--local-validation, or they will retrieve themselves", len(clash), clash[0])
    unit = read_unit(root)
    log.info("COLMAP layout %s: %d references, %d points, %d queries (unit %s)", root,
             len(references), len(points), len(queries), unit)
    if warn_unit and unit != "m":
        log.warning("map unit %r: max_reference_distance_m, the tracking and prior radii and the "
                    "evaluation thresholds are in this unit; set them for the model's scale", unit)
    return Dataset(root.name, root, references, points, queries, unit)


def _query_name(dataset: Dataset, query: QueryImage) -> str:
    """A query's path relative to the dataset's images/ (its name when it lies elsewhere)."""
    try:
        return Path(query.path).relative_to(dataset.root / "images").as_posix()
    except ValueError:
        return f"query/{Path(query.path).name}"


def write_colmap_layout(dataset: Dataset, out: str | Path, ground_truth: dict | None = None) -> Path:
    """Write ``dataset`` in this layout: a binary COLMAP model of its references (cameras, posed
    images with their keypoints, 3D points with their tracks; pycolmap), the images copied under
    ``images/`` and its queries in ``queries_with_intrinsics.txt``; with ``ground_truth``
    ({query name: Pose}), ``ground_truth.txt`` under the layout's query names. Returns ``out``."""
    import shutil  # noqa: PLC0415
    from collections import defaultdict  # noqa: PLC0415

    import pycolmap  # noqa: PLC0415

    from .query_list import write_query_list  # noqa: PLC0415

    out = Path(out)
    if (out / "sparse").exists():
        raise DatasetError(f"{out / 'sparse'} exists already; choose another folder")
    rec = pycolmap.Reconstruction()
    camera_ids: dict[tuple, int] = {}
    tracks = defaultdict(list)
    for image_id, ref in enumerate(dataset.references, 1):
        model, width, height, params = ref.camera.to_colmap()
        key = (model, width, height, tuple(float(p) for p in params))
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(
                model=model, width=width, height=height, params=params,
                camera_id=camera_ids[key]))
        image = pycolmap.Image(name=ref.name, keypoints=ref.keypoints + 0.5,  # COLMAP pixels
                               camera_id=camera_ids[key], image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(
            pycolmap.Rotation3d(ref.pose.R), ref.pose.t))
        for index, point_id in enumerate(ref.point_ids):
            tracks[int(point_id)].append(pycolmap.TrackElement(image_id, index))
        target = out / "images" / ref.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ref.path, target)
    for point_id, elements in sorted(tracks.items()):
        rec.add_point3D(dataset.points3d[point_id], pycolmap.Track(elements))
    (out / "sparse").mkdir(parents=True)
    rec.write_binary(str(out / "sparse"))
    entries = []
    for query in dataset.queries:
        name = _query_name(dataset, query)
        target = out / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(query.path, target)
        entries.append((name, query.camera))
    if entries:
        write_query_list(out / QUERY_LIST, entries)
    if ground_truth is not None:

        write_submission(out / "ground_truth.txt",
                         {name: ground_truth[q.name] for (name, _), q in zip(entries, dataset.queries)
                          if q.name in ground_truth})
    (out / UNIT_FILE).write_text(dataset.unit + "\n")
    return out
