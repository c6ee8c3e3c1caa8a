"""The reference map: what every query needs, computed once, living on disk.

A map directory holds ``manifest.json`` (format, version, weights hash, image size, unit, build
config, the matching-descriptor settings, cameras, names, array shapes/dtypes/sha256) and one
``.npy`` file per array. Per reference image i (K keypoints, padded):

    rotations [N,3,3] f64, translations [N,3] f64   world-to-camera poses       (in memory)
    global_descriptors [N,D] f32   NetVLAD after PCA, L2-normalised            (in memory)
    global_neighbour_similarity [N] f32  optional: each reference's mean similarity to its
                                   nearest others, the hub term of retrieval (in memory)
    keypoints [N,K,2] f32          pixels in the reference image (OpenCV)      (rows on demand)
    points_camera [N,K,3] f32      3D points of those keypoints in their reference camera's
                                   frame; read as world points [K,3] f64 (:class:`WorldPoints`,
                                   ``points3d``). Version 2 maps store ``points3d`` [N,K,3] f64
                                   in the world instead                        (rows on demand)
    valid     [N,K]   bool         False for padding                           (rows on demand)
    descriptors [N,K,d] int8       hypercolumns at the keypoints, projected to
                                   the matching space and quantised            (rows on demand)
    descriptor_scales [N,K] f16    per-vector scale: descriptor ~= q * scale   (rows on demand)
    detail_descriptors [N,K,e] int8  optional: relu2_2 features (stride 2) at the keypoints,
                                   projected to e dimensions by ``detail_projection`` (version 3;
                                   raw 128-d unit-norm features in version 2), the detail level of
                                   Feature-metric PnP                          (rows on demand)
    detail_scales [N,K] f16        their per-vector scales                     (rows on demand)
    pca_<key>          PCA of the global descriptors (features.pca.PCA state; components f16)
    projection_<key>   PCA of the hypercolumns into the matching space (components f16)
    detail_projection_<key>  optional: PCA of the detail features (components f16)

At 4096 keypoints, 128-d matching and 64-d detail descriptors that is about 0.89 MB per image
plus the PCAs (at most about 140 MB, shared by the whole map).

Opening a map reads the manifest, the small arrays and the ``.npy`` headers (shapes, dtypes and
file sizes are checked against the manifest); the per-keypoint arrays are read row by row with
``pread`` when a query needs a reference, so the resident memory does not grow with the map.
``verify()`` (tool ``verify_map``) checks every file's sha256, written at build time.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MapFormatError
from .geometry import Camera, Pose
from .retrieval import HUB_NEIGHBOURS, neighbour_similarity

MAP_FORMAT = "ros2_s2dhm-map"
MAP_VERSION = 3
#: Versions this build opens (version 2: world points in float64, unprojected detail level).
READABLE_VERSIONS = (2, 3)
MANIFEST = "manifest.json"

#: Arrays with one small row per image, loaded into memory when the map is opened.
SMALL_ARRAYS = {"rotations": np.float64, "translations": np.float64, "global_descriptors": np.float32}
#: Arrays with K keypoints per image, read per reference on demand.
ROW_ARRAYS = {"keypoints": np.float32, "valid": np.bool_, "descriptors": np.int8,
              "descriptor_scales": np.float16}
#: The keypoints' 3D points: one of these row arrays (version 3 writes the first).
POINT_ARRAYS = {"points_camera": np.float32, "points3d": np.float64}
#: Optional small array: maps built before hubness reduction have none (computed when opened).
HUB_ARRAY = "global_neighbour_similarity"
#: Optional row arrays: maps built before the detail level have none (single-level refinement).
DETAIL_ARRAYS = {"detail_descriptors": np.int8, "detail_scales": np.float16}
_ARRAY_DTYPES = {**SMALL_ARRAYS, **ROW_ARRAYS}  # arrays every map has
_ROW_DTYPES = {**ROW_ARRAYS, **POINT_ARRAYS, **DETAIL_ARRAYS}  # every array read row by row
_STATES = ("pca", "projection", "detail_projection")

_REBUILD = "rebuild it with `build_map --dataset DIR --out MAP`"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _row_index(index, length: int) -> np.ndarray:
    """A row index (int, index array, slice or boolean mask) of ``length`` rows as an array."""
    if isinstance(index, slice):
        return np.arange(length)[index]
    idx = np.asarray(index)
    return np.flatnonzero(idx) if idx.dtype == bool else idx


class NpyRows:
    """A ``.npy`` array [N, ...] on disk whose rows are read on demand (``os.pread``).

    Supports ``len``, ``shape``, ``dtype``, ``rows[i]``, ``rows[index_array]`` and
    ``rows[a:b]``; ``np.asarray(rows)`` reads it whole. Nothing is read at construction but
    the header; the file size must match the header exactly.
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
                self.offset = f.tell()
        except (ValueError, OSError) as e:
            raise MapFormatError(f"{self.path}: not a readable .npy file ({e})") from None
        if fortran or dtype.hasobject or len(shape) < 1:
            raise MapFormatError(f"{self.path}: expected a C-ordered numeric array with rows")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        size = self.path.stat().st_size
        if size != expected:
            raise MapFormatError(f"{self.path}: file is {size} bytes, its header describes "
                                 f"{expected} (truncated or overwritten); {_REBUILD}")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _row(self, i: int) -> np.ndarray:
        data = os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes)
        if len(data) != self.row_bytes:
            raise MapFormatError(f"{self.path}: short read of row {i}; {_REBUILD}")
        return np.frombuffer(data, self.dtype).reshape(self.row_shape)

    def __getitem__(self, index) -> np.ndarray:
        idx = _row_index(index, len(self))
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"NpyRows index must be integers, a slice or a mask, got {idx.dtype}")
        flat = np.where(idx < 0, idx + len(self), idx).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"{self.path.name}: row index out of range for {len(self)} rows")
        out = np.empty((flat.size, *self.row_shape), self.dtype)
        for j, i in enumerate(flat):
            out[j] = self._row(int(i))
        return out.reshape(*idx.shape, *self.row_shape)

    def __array__(self, dtype=None, copy=None):
        arr = np.load(self.path)
        return arr if dtype is None else arr.astype(dtype)


class WorldPoints:
    """World points [N,K,3] float64 of a map that stores them in each reference camera's frame.

    Row i is ``R_i^T (x - t_i)`` for the stored camera-frame points x [K,3] float32 (the
    reference's world-to-camera pose R_i, t_i): float32 near the camera keeps them within about
    1e-5 of the float64 world points at 100 map units, at half their size. Indexed like
    :class:`NpyRows` (an int, an index array, a slice or a mask; rows read on demand).
    """

    def __init__(self, camera_rows, rotations: np.ndarray, translations: np.ndarray):
        self.camera_rows = camera_rows
        self.rotations = np.asarray(rotations, np.float64)
        self.translations = np.asarray(translations, np.float64)
        self.shape, self.dtype = tuple(camera_rows.shape), np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        idx = _row_index(index, len(self))
        flat = idx.reshape(-1)
        local = np.asarray(self.camera_rows[flat], np.float64)
        out = np.empty_like(local)
        for j, i in enumerate(flat):
            out[j] = Pose(self.rotations[i], self.translations[i]).inverse().transform(local[j])
        return out.reshape(*idx.shape, *self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        arr = self[np.arange(len(self))]
        return arr if dtype is None else arr.astype(dtype)


class MapWriter:
    """Writes a map directory row by row (resident memory independent of the map's size).

    Row arrays are ``.npy`` memory maps filled with :meth:`set_row`; :meth:`finish` writes the
    small arrays, hashes every file and writes the manifest last, so a partial write is never a
    valid map.
    """

    def __init__(self, map_dir, rotations: np.ndarray, translations: np.ndarray,
                 num_keypoints: int, descriptor_dim: int, detail_dim: int = 0):
        """A writer of ``len(rotations)`` images whose world-to-camera poses are
        ``rotations [N,3,3]``, ``translations [N,3]``, with at most ``num_keypoints`` each."""
        self.dir = Path(map_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / MANIFEST).unlink(missing_ok=True)
        self.rotations = np.asarray(rotations, np.float64)
        self.translations = np.asarray(translations, np.float64)
        n, k, d = len(self.rotations), max(1, int(num_keypoints)), int(descriptor_dim)
        shapes = {"keypoints": (n, k, 2), "points_camera": (n, k, 3), "valid": (n, k),
                  "descriptors": (n, k, d), "descriptor_scales": (n, k)}
        if detail_dim:
            shapes.update(detail_descriptors=(n, k, int(detail_dim)), detail_scales=(n, k))
        self.rows = {name: np.lib.format.open_memmap(self.dir / f"{name}.npy", mode="w+",
                                                     dtype=_ROW_DTYPES[name], shape=shape)
                     for name, shape in shapes.items()}
        self.num_keypoints = k

    def set_row(self, i: int, keypoints, points3d, descriptors, scales, detail=None,
                detail_scales=None) -> None:
        """Image i's M <= K keypoints [M,2], world points [M,3] (stored in image i's camera
        frame), int8 descriptors [M,d], scales [M] and, when the map has a detail level, int8
        detail descriptors [M,e] and scales [M]."""
        m = len(keypoints)
        if m > self.num_keypoints:
            raise ValueError(f"image {i}: {m} keypoints exceed the map's {self.num_keypoints}")
        local = Pose(self.rotations[i], self.translations[i]).transform(np.reshape(points3d, (m, 3)))
        values = [("keypoints", keypoints), ("points_camera", local), ("descriptors", descriptors),
                  ("descriptor_scales", scales)]
        if "detail_descriptors" in self.rows:
            if detail is None or detail_scales is None:
                raise ValueError(f"image {i}: this map has a detail level; pass its descriptors")
            values += [("detail_descriptors", detail), ("detail_scales", detail_scales)]
        for name, value in values:
            self.rows[name][i] = 0
            self.rows[name][i, :m] = value
        self.rows["valid"][i] = False
        self.rows["valid"][i, :m] = True

    def finish(self, *, names, cameras, global_descriptors, pca: dict, projection: dict,
               weights_sha256: str, weights_kind: str, image_size: int, config: dict,
               unit: str = "m", neighbour_similarity=None, detail_projection: dict | None = None
               ) -> Path:
        """Write the small arrays and states, then the manifest with every file's hash;
        ``neighbour_similarity`` [N] is the retrieval hub term (optional), ``detail_projection``
        the PCA state of the detail level (None: the detail level, if any, is not projected)."""
        n = len(names)
        for arr in self.rows.values():
            arr.flush()
        arrays = dict(rotations=self.rotations, translations=self.translations,
                      global_descriptors=np.asarray(global_descriptors, np.float32))
        if neighbour_similarity is not None:
            arrays[HUB_ARRAY] = np.asarray(neighbour_similarity, np.float32).reshape(n)
        states = {"pca": pca, "projection": projection, "detail_projection": detail_projection or {}}
        arrays.update({f"{state}_{k}": np.asarray(v) for state, values in states.items()
                       for k, v in values.items()})
        for name, arr in arrays.items():
            np.save(self.dir / f"{name}.npy", arr)
        meta = {}
        for name in [*self.rows, *arrays]:
            path = self.dir / f"{name}.npy"
            arr = self.rows.get(name, arrays.get(name))
            meta[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _sha256(path)}
        self.rows = {}
        proj = projection
        manifest = {
            "format": MAP_FORMAT, "version": MAP_VERSION,
            "weights_sha256": weights_sha256, "weights_kind": weights_kind,
            "image_size": int(image_size), "unit": unit, "config": config,
            "descriptors": {"dim": int(np.asarray(proj["components"]).shape[0]),
                            "source_dim": int(np.asarray(proj["components"]).shape[1]),
                            "whiten": bool(np.asarray(proj.get("whiten", False))),
                            "quantization": "int8, one float16 scale per vector"},
            **({"detail": {"layer": "relu2_2", "stride": 2,
                           "dim": meta["detail_descriptors"]["shape"][-1],
                           "projected": bool(detail_projection),
                           "quantization": "int8, one float16 scale per vector"}}
               if "detail_descriptors" in meta else {}),
            "names": list(names),
            "cameras": [{"model": c.model, "width": c.width, "height": c.height,
                         "params": [float(p) for p in c.params]} for c in cameras],
            "arrays": meta,
        }
        if len(manifest["cameras"]) != n:
            raise MapFormatError(f"map {self.dir}: {len(cameras)} cameras for {n} images")
        (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return self.dir


@dataclass
class ReferenceMap:
    """A map: names, cameras and poses in memory, per-keypoint arrays in memory or on disk
    (:class:`NpyRows`; ``points3d`` a :class:`WorldPoints` over the stored camera-frame points).
    Index the row arrays with the retrieved image indices. ``detail_projection`` is the PCA
    state of the detail level (None: the stored detail features are the raw 128-d ones)."""

    names: list[str]
    cameras: list[Camera]
    rotations: np.ndarray
    translations: np.ndarray
    keypoints: np.ndarray
    points3d: np.ndarray
    valid: np.ndarray
    descriptors: np.ndarray
    descriptor_scales: np.ndarray
    global_descriptors: np.ndarray
    pca: dict[str, np.ndarray]
    projection: dict[str, np.ndarray]
    weights_sha256: str
    weights_kind: str = "unknown"
    image_size: int = 512
    unit: str = "m"
    config: dict = field(default_factory=dict)
    directory: Path | None = None
    detail_descriptors: np.ndarray | None = None
    detail_scales: np.ndarray | None = None
    global_neighbour_similarity: np.ndarray | None = None
    detail_projection: dict | None = None

    def __post_init__(self):
        self._check_shapes(str(self.directory or "<memory>"))
        self._name_index = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    @property
    def descriptor_dim(self) -> int:
        return self.descriptors.shape[2]

    @property
    def has_detail(self) -> bool:
        """Whether the map stores the detail level of Feature-metric PnP."""
        return self.detail_descriptors is not None

    @property
    def detail_dim(self) -> int:
        return self.detail_descriptors.shape[2] if self.has_detail else 0

    @property
    def centers(self) -> np.ndarray:
        """Camera centres in the world [N,3]."""
        return -np.einsum("nji,nj->ni", self.rotations, self.translations)

    @property
    def viewing_directions(self) -> np.ndarray:
        """Unit optical axes (camera z) in the world [N,3]."""
        return np.asarray(self.rotations)[:, 2, :]

    def pose(self, i: int) -> Pose:
        return Pose(np.array(self.rotations[i]), np.array(self.translations[i]))

    def index(self, name: str) -> int:
        try:
            return self._name_index[name]
        except KeyError:
            raise KeyError(f"reference {name!r} is not in the map") from None

    def _check_shapes(self, where: str):
        n = len(self.names)
        if len(self.cameras) != n:
            raise MapFormatError(f"map {where}: {len(self.cameras)} cameras for {n} images")
        k = self.keypoints.shape[1] if self.keypoints.ndim == 3 else -1
        expected = {
            "rotations": (n, 3, 3), "translations": (n, 3), "keypoints": (n, k, 2),
            "points3d": (n, k, 3), "valid": (n, k),
            "descriptors": (n, k, self.descriptors.shape[-1]), "descriptor_scales": (n, k),
            "global_descriptors": (n, self.global_descriptors.shape[-1]),
        }
        if (self.detail_descriptors is None) != (self.detail_scales is None):
            raise MapFormatError(f"map {where}: detail_descriptors and detail_scales come together")
        if self.has_detail:
            expected.update(detail_descriptors=(n, k, self.detail_dim), detail_scales=(n, k))
        if self.global_neighbour_similarity is not None:
            expected[HUB_ARRAY] = (n,)
        for name, shape in expected.items():
            found = tuple(getattr(self, name).shape)
            if found != shape:
                raise MapFormatError(
                    f"map {where}: array '{name}' has shape {found}, expected {shape} "
                    f"({n} images, {k} keypoints per image)")
        d = np.asarray(self.projection.get("components", np.zeros((0, 0)))).shape
        if d[0] != self.descriptors.shape[-1]:
            raise MapFormatError(f"map {where}: projection has {d[0]} components but descriptors "
                                 f"have {self.descriptors.shape[-1]} dimensions")
        if self.detail_projection:
            e = np.asarray(self.detail_projection.get("components", np.zeros((0, 0)))).shape
            if not self.has_detail or e[0] != self.detail_dim:
                raise MapFormatError(f"map {where}: detail_projection has {e[0]} components but "
                                     f"the detail descriptors have {self.detail_dim} dimensions")

    # ------------------------------------------------------------------ files
    def save(self, map_dir) -> Path:
        """Write the map directory (row arrays copied image by image, manifest last)."""
        writer = _copy_rows(self, map_dir, np.arange(len(self)))
        return writer.finish(
            names=self.names, cameras=self.cameras, global_descriptors=self.global_descriptors,
            pca=self.pca, projection=self.projection, weights_sha256=self.weights_sha256,
            weights_kind=self.weights_kind, image_size=self.image_size, config=self.config,
            unit=self.unit, neighbour_similarity=self.global_neighbour_similarity,
            detail_projection=self.detail_projection)

    @staticmethod
    def _manifest(map_dir: Path) -> dict:
        manifest_path = map_dir / MANIFEST
        if not manifest_path.is_file():
            raise MapFormatError(f"no map at {map_dir}: {MANIFEST} is missing "
                                 f"(build one with `build_map --dataset DIR --out {map_dir}`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise MapFormatError(f"{manifest_path}: not valid JSON ({e})") from None
        if manifest.get("format") != MAP_FORMAT:
            raise MapFormatError(f"{manifest_path}: field 'format' is {manifest.get('format')!r}, "
                                 f"expected {MAP_FORMAT!r}")
        version = manifest.get("version")
        if version == 1:
            raise MapFormatError(
                f"{manifest_path}: map format version 1 (full 2048-d fp16 descriptors, about "
                f"17 MB per image) is no longer read; this build reads versions "
                f"{READABLE_VERSIONS} (compact int8 descriptors, under 1 MB per image): {_REBUILD}")
        if version not in READABLE_VERSIONS:
            raise MapFormatError(f"{manifest_path}: map format version {version} is not supported "
                                 f"(this build reads versions {READABLE_VERSIONS}); {_REBUILD}")
        return manifest

    @classmethod
    def load(cls, map_dir, expected_weights_sha256: str | None = None) -> "ReferenceMap":
        """Open a map directory: manifest, small arrays and headers; rows stay on disk.

        Raises MapFormatError when the directory or a file is missing, the format or version
        differs, an array's shape/dtype/size disagrees with the manifest, or the map was built
        with weights other than ``expected_weights_sha256``. File hashes are not read here
        (see :meth:`verify`).
        """
        map_dir = Path(map_dir)
        manifest = cls._manifest(map_dir)
        sha = manifest.get("weights_sha256", "")
        if expected_weights_sha256 is not None and sha != expected_weights_sha256:
            raise MapFormatError(
                f"map {map_dir} was built with other weights ({manifest.get('weights_kind')} "
                f"{sha[:12]}) than the ones loaded ({expected_weights_sha256[:12]}): rebuild the "
                f"map with these weights or load the weights it was built with")
        arrays = {}
        for name, meta in manifest.get("arrays", {}).items():
            path = map_dir / f"{name}.npy"
            if not path.is_file():
                raise MapFormatError(f"map {map_dir}: array file {path.name} is missing")
            if name in _ROW_DTYPES:
                arr = NpyRows(path)
            else:
                try:
                    arr = np.load(path)
                except (ValueError, OSError) as e:
                    raise MapFormatError(f"map {map_dir}: cannot read {path.name} ({e}); {_REBUILD}") from None
            if list(arr.shape) != meta.get("shape") or str(arr.dtype) != meta.get("dtype"):
                raise MapFormatError(f"map {map_dir}: {path.name} is {arr.dtype}{list(arr.shape)}, "
                                     f"manifest says {meta.get('dtype')}{meta.get('shape')}")
            arrays[name] = arr
        missing = [k for k in _ARRAY_DTYPES if k not in arrays]
        if not any(k in arrays for k in POINT_ARRAYS):
            missing.append(" or ".join(POINT_ARRAYS))
        if missing:
            raise MapFormatError(f"{map_dir / MANIFEST}: arrays {missing} are missing from the manifest")
        for k, dtype in {**_ARRAY_DTYPES, **_ROW_DTYPES, HUB_ARRAY: np.float32}.items():
            if k in arrays and arrays[k].dtype != dtype:
                raise MapFormatError(f"map {map_dir}: {k}.npy has dtype {arrays[k].dtype}, expected "
                                     f"{np.dtype(dtype)}")
        try:
            cameras = [Camera(c["model"], int(c["width"]), int(c["height"]),
                              np.asarray(c["params"], np.float64)) for c in manifest["cameras"]]
            names = list(manifest["names"])
        except (KeyError, TypeError) as e:
            raise MapFormatError(f"{map_dir / MANIFEST}: field {e} is missing or malformed") from None
        states = {s: {k[len(s) + 1:]: v for k, v in arrays.items() if k.startswith(s + "_")}
                  for s in _STATES}
        states["detail_projection"] = states["detail_projection"] or None
        points = arrays.get("points3d")
        if "points_camera" in arrays:
            points = WorldPoints(arrays["points_camera"], arrays["rotations"], arrays["translations"])
        return cls(names=names, cameras=cameras, weights_sha256=sha, points3d=points,
                   weights_kind=manifest.get("weights_kind", "unknown"),
                   image_size=int(manifest.get("image_size", 512)),
                   unit=manifest.get("unit", "m"), config=manifest.get("config", {}),
                   directory=map_dir, **states, **{k: arrays[k] for k in _ARRAY_DTYPES},
                   **{k: arrays[k] for k in (*DETAIL_ARRAYS, HUB_ARRAY) if k in arrays})

    @classmethod
    def verify(cls, map_dir) -> int:
        """Check every array file against the sha256 written at build time.

        Returns the number of files checked; raises MapFormatError naming the first bad file.
        """
        map_dir = Path(map_dir)
        manifest = cls._manifest(map_dir)
        for name, meta in manifest.get("arrays", {}).items():
            path = map_dir / f"{name}.npy"
            if not path.is_file():
                raise MapFormatError(f"map {map_dir}: array file {path.name} is missing")
            if _sha256(path) != meta.get("sha256"):
                raise MapFormatError(f"map {map_dir}: {path.name} does not match the sha256 in "
                                     f"{MANIFEST} (file changed or corrupted); {_REBUILD}")
        return len(manifest.get("arrays", {}))


def _copy_rows(source: ReferenceMap, out_dir, rows: np.ndarray) -> MapWriter:
    """A MapWriter whose image i holds ``source``'s image ``rows[i]`` (valid keypoints only)."""
    writer = MapWriter(out_dir, np.asarray(source.rotations)[rows],
                       np.asarray(source.translations)[rows], source.num_keypoints,
                       source.descriptor_dim, source.detail_dim)
    for i, j in enumerate(rows):
        m = int(np.asarray(source.valid[j]).sum())
        detail = ((source.detail_descriptors[j][:m], source.detail_scales[j][:m])
                  if source.has_detail else ())
        writer.set_row(i, source.keypoints[j][:m], source.points3d[j][:m],
                       source.descriptors[j][:m], source.descriptor_scales[j][:m], *detail)
    return writer


def replicate_map(source: ReferenceMap, out_dir, num_images: int) -> Path:
    """A map of ``num_images`` images made by cycling ``source``'s images (scale benchmarks).

    Copies are renamed ``<name>#<copy>``; their arrays are the source rows, written row by row.
    The hub term of retrieval is recomputed over the replicated map (copies are neighbours).
    """
    n = len(source)
    cycle = np.arange(num_images) % n
    writer = _copy_rows(source, out_dir, cycle)
    return writer.finish(
        names=[source.names[j] if i < n else f"{source.names[j]}#{i // n}" for i, j in enumerate(cycle)],
        cameras=[source.cameras[j] for j in cycle],
        global_descriptors=np.asarray(source.global_descriptors)[cycle], pca=source.pca,
        projection=source.projection, weights_sha256=source.weights_sha256,
        weights_kind=source.weights_kind, image_size=source.image_size,
        config={**source.config, "replicated_from": str(source.directory), "source_images": n},
        unit=source.unit, detail_projection=source.detail_projection,
        neighbour_similarity=neighbour_similarity(
            np.asarray(source.global_descriptors)[cycle],
            source.config.get("hub_neighbours", HUB_NEIGHBOURS)))
