"""The preloaded reference map: what every query needs, computed once.

A map directory holds ``manifest.json`` (format version, weights hash, image
size, build config, cameras, names, array shapes/dtypes/sha256) and one ``.npy``
file per array, loaded memory-mapped. Per reference image i (K keypoints, padded):

    rotations [N,3,3] f64, translations [N,3] f64   world-to-camera poses
    keypoints [N,K,2] f32    pixels in the reference image (OpenCV convention)
    points3d  [N,K,3] f64    world points of those keypoints
    valid     [N,K]   bool   False for padding
    descriptors [N,K,C] f16  hypercolumns sampled bilinearly at the keypoints
    global_descriptors [N,D] f32  NetVLAD after PCA, L2-normalised
    pca_<key>            the PCA state (see features.netvlad.PCA)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MapFormatError
from .geometry import Camera, Pose

MAP_FORMAT = "ros2_s2dhm-map"
MAP_VERSION = 1
MANIFEST = "manifest.json"

_ARRAY_DTYPES = {
    "rotations": np.float64, "translations": np.float64, "keypoints": np.float32,
    "points3d": np.float64, "valid": np.bool_, "descriptors": np.float16,
    "global_descriptors": np.float32,
}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class ReferenceMap:
    """In-memory view of a map directory (arrays may be read-only memory maps)."""

    names: list[str]
    cameras: list[Camera]
    rotations: np.ndarray
    translations: np.ndarray
    keypoints: np.ndarray
    points3d: np.ndarray
    valid: np.ndarray
    descriptors: np.ndarray
    global_descriptors: np.ndarray
    pca: dict[str, np.ndarray]
    weights_sha256: str
    weights_kind: str = "unknown"
    image_size: int = 512
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        self._check_shapes("<memory>")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    @property
    def descriptor_dim(self) -> int:
        return self.descriptors.shape[2]

    @property
    def centers(self) -> np.ndarray:
        """Camera centres in the world [N,3]."""
        return -np.einsum("nji,nj->ni", self.rotations, self.translations)

    def pose(self, i: int) -> Pose:
        return Pose(np.array(self.rotations[i]), np.array(self.translations[i]))

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"reference {name!r} is not in the map") from None

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: getattr(self, k) for k in _ARRAY_DTYPES}
        arrays.update({f"pca_{k}": np.asarray(v) for k, v in self.pca.items()})
        return arrays

    def _check_shapes(self, where: str):
        n = len(self.names)
        if len(self.cameras) != n:
            raise MapFormatError(f"map {where}: {len(self.cameras)} cameras for {n} images")
        k = self.keypoints.shape[1] if self.keypoints.ndim == 3 else -1
        expected = {
            "rotations": (n, 3, 3), "translations": (n, 3), "keypoints": (n, k, 2),
            "points3d": (n, k, 3), "valid": (n, k),
            "descriptors": (n, k, self.descriptors.shape[-1]),
            "global_descriptors": (n, self.global_descriptors.shape[-1]),
        }
        for name, shape in expected.items():
            found = tuple(getattr(self, name).shape)
            if found != shape:
                raise MapFormatError(
                    f"map {where}: array '{name}' has shape {found}, expected {shape} "
                    f"({n} images, {k} keypoints per image)")

    # ------------------------------------------------------------------ files
    def save(self, map_dir) -> Path:
        """Write the map directory (arrays as .npy, manifest last so a partial write is invalid)."""
        map_dir = Path(map_dir)
        map_dir.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, arr in self._arrays().items():
            path = map_dir / f"{name}.npy"
            np.save(path, np.asarray(arr))
            arrays[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _sha256(path)}
        manifest = {
            "format": MAP_FORMAT, "version": MAP_VERSION,
            "weights_sha256": self.weights_sha256, "weights_kind": self.weights_kind,
            "image_size": self.image_size, "config": self.config, "names": self.names,
            "cameras": [{"model": c.model, "width": c.width, "height": c.height,
                         "params": [float(p) for p in c.params]} for c in self.cameras],
            "arrays": arrays,
        }
        (map_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return map_dir

    @classmethod
    def load(cls, map_dir, expected_weights_sha256: str | None = None, mmap: bool = True,
             verify_hashes: bool = True) -> "ReferenceMap":
        """Load and validate a map directory.

        Raises MapFormatError when the directory or a file is missing, the format or
        version differs, an array's shape/dtype/hash disagrees with the manifest, or the
        map was built with weights other than ``expected_weights_sha256``.
        """
        map_dir = Path(map_dir)
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
        if manifest.get("version") != MAP_VERSION:
            raise MapFormatError(f"{manifest_path}: map format version {manifest.get('version')} is "
                                 f"not supported (this build reads version {MAP_VERSION}); rebuild the map")
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
            if verify_hashes and _sha256(path) != meta.get("sha256"):
                raise MapFormatError(f"map {map_dir}: {path.name} does not match the sha256 in "
                                     f"{MANIFEST} (file changed or truncated); rebuild the map")
            try:
                arr = np.load(path, mmap_mode="r" if mmap else None)
            except (ValueError, OSError) as e:
                raise MapFormatError(f"map {map_dir}: cannot read {path.name} ({e})") from None
            if list(arr.shape) != meta.get("shape") or str(arr.dtype) != meta.get("dtype"):
                raise MapFormatError(f"map {map_dir}: {path.name} is {arr.dtype}{list(arr.shape)}, "
                                     f"manifest says {meta.get('dtype')}{meta.get('shape')}")
            arrays[name] = arr
        missing = [k for k in _ARRAY_DTYPES if k not in arrays]
        if missing:
            raise MapFormatError(f"{manifest_path}: arrays {missing} are missing from the manifest")
        try:
            cameras = [Camera(c["model"], int(c["width"]), int(c["height"]),
                              np.asarray(c["params"], np.float64)) for c in manifest["cameras"]]
            names = list(manifest["names"])
        except (KeyError, TypeError) as e:
            raise MapFormatError(f"{manifest_path}: field {e} is missing or malformed") from None
        pca = {k[len("pca_"):]: v for k, v in arrays.items() if k.startswith("pca_")}
        ref_map = cls(names=names, cameras=cameras, pca=pca, weights_sha256=sha,
                      weights_kind=manifest.get("weights_kind", "unknown"),
                      image_size=int(manifest.get("image_size", 512)),
                      config=manifest.get("config", {}),
                      **{k: arrays[k] for k in _ARRAY_DTYPES})
        for k, dtype in _ARRAY_DTYPES.items():
            if arrays[k].dtype != dtype:
                raise MapFormatError(f"map {map_dir}: {k}.npy has dtype {arrays[k].dtype}, expected "
                                     f"{np.dtype(dtype)}")
        return ref_map
