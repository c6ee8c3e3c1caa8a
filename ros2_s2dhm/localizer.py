"""One query image in, one localization result out. Owns no I/O.

Per query: one backbone pass (hypercolumn + NetVLAD), top-k retrieval, sparse-to-dense
matching batched over the k references, one RANSAC-PnP over all their 2D-3D matches,
Feature-metric PnP on the inliers. Reference hypercolumns come from the map; they are
never recomputed per query.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputImageError
from .features.netvlad import PCA
from .features.preprocess import prepare_image
from .geometry import Camera, Pose
from .geometry.pixels import feature_to_image, scale_pixels
from .matching import MatcherConfig, match_sparse_to_dense
from .pnp import PnPConfig, ransac_pnp
from .reference_map import ReferenceMap
from .refine import FeatureMetricPnP, RefineConfig
from .retrieval import RetrievalIndex

HYPERCOLUMN_STRIDE = 4
STAGES = ("preprocess", "backbone", "retrieval", "matching", "pnp", "refine", "total")


@dataclass
class LocalizerConfig:
    """Pipeline settings. ``intrinsics``: "query" uses the query camera for PnP and
    refinement; "reference" uses the top-1 reference camera (as S2DHM did)."""

    top_k: int = 10
    image_size: int | None = None  # None: the size the map was built at
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    refine_enabled: bool = True
    intrinsics: str = "query"
    preload_descriptors: bool = True

    def __post_init__(self):
        if self.intrinsics not in ("query", "reference"):
            raise ValueError(f"LocalizerConfig.intrinsics must be 'query' or 'reference', "
                             f"got {self.intrinsics!r}")


@dataclass
class LocalizationResult:
    """What one query produced. ``pose`` is None whenever ``success`` is False.

    covariance: [6,6] over the left perturbation (rotation first) of the world-to-camera
    pose, from the Feature-PnP Hessian. inlier_keypoints [M,2] (query pixels) and
    inlier_points3d [M,3] are the RANSAC-PnP inliers.
    """

    success: bool
    failure_reason: str | None = None
    pose: Pose | None = None
    pose_rpnp: Pose | None = None
    pose_fpnp: Pose | None = None
    covariance: np.ndarray | None = None
    num_matches: int = 0
    num_inliers: int = 0
    reference_names: list[str] = field(default_factory=list)
    reference_indices: list[int] = field(default_factory=list)
    retrieval_scores: list[float] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    refine_reason: str | None = None
    weights_random: bool = False
    inlier_keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    inlier_points3d: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


class _Timer:
    """Per-stage wall-clock timings; synchronises CUDA so a stage is charged its own work."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.ms[stage] = self.ms.get(stage, 0.0) + 1e3 * (time.perf_counter() - t0)


def check_query(image: np.ndarray, camera: Camera) -> None:
    """Raise InputImageError unless image is a non-empty HxWx3 uint8 array of the camera's size."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise InputImageError(f"query image must be an HxWx3 RGB array, got {shape}")
    if image.dtype != np.uint8:
        raise InputImageError(f"query image must be uint8, got {image.dtype}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InputImageError("query image is empty (0 pixels)")
    if (w, h) != (camera.width, camera.height):
        raise InputImageError(f"query image is {w}x{h} but its camera is "
                              f"{camera.width}x{camera.height}")


class Localizer:
    """Localize query images against a :class:`ReferenceMap` with an S2DHM network."""

    def __init__(self, network, reference_map: ReferenceMap, config: LocalizerConfig | None = None,
                 device="cpu", weights_random: bool = False):
        self.config = config or LocalizerConfig()
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.map = reference_map
        self.image_size = self.config.image_size or reference_map.image_size
        self.weights_random = weights_random
        self.pca = PCA.from_state_dict(reference_map.pca)
        self.index = RetrievalIndex(reference_map.global_descriptors, reference_map.centers,
                                    self.device)
        self.refiner = FeatureMetricPnP(self.config.refine)
        self._descriptors = (torch.from_numpy(np.asarray(reference_map.descriptors)).to(self.device)
                             if self.config.preload_descriptors else None)

    def _gather(self, indices: np.ndarray):
        """Reference data of the retrieved images, on the device.

        Returns descriptors [k,K,C], valid [k,K], keypoints [k,K,2], points3d [k,K,3].
        """
        if self._descriptors is not None:
            desc = self._descriptors[torch.as_tensor(indices, device=self.device)]
        else:
            desc = torch.from_numpy(np.asarray(self.map.descriptors[np.sort(indices)])).to(self.device)
            desc = desc[torch.as_tensor(np.argsort(np.argsort(indices)), device=self.device)]
        valid = torch.from_numpy(np.asarray(self.map.valid[indices])).to(self.device)
        return desc, valid, self.map.points3d[indices]

    def _camera(self, query_camera: Camera, top: int) -> Camera:
        if self.config.intrinsics == "query":
            return query_camera
        ref = self.map.cameras[top]
        return ref.scaled(query_camera.width / ref.width, query_camera.height / ref.height)

    @torch.no_grad()
    def localize(self, image: np.ndarray, camera: Camera, prior_center=None,
                 prior_radius_m: float | None = None, exclude_reference: str | None = None
                 ) -> LocalizationResult:
        """Localize one RGB image (HxWx3 uint8) taken by ``camera``.

        prior_center/prior_radius_m restrict retrieval to references near a position;
        exclude_reference (a map name) is never retrieved (local validation).
        Raises InputImageError for unusable input; any other failure is a result with
        success=False and a failure_reason, never a fallback pose.
        """
        check_query(image, camera)
        timer = _Timer(self.device)
        res = LocalizationResult(success=False, weights_random=self.weights_random)
        t_start = time.perf_counter()
        try:
            self._run(image, camera, prior_center, prior_radius_m, exclude_reference, timer, res)
        finally:
            timer.ms["total"] = 1e3 * (time.perf_counter() - t_start)
            res.timings_ms = timer.ms
        return res

    def _run(self, image, camera, prior_center, prior_radius_m, exclude_reference, timer, res):
        cfg = self.config
        with timer("preprocess"):
            tensor, scale = prepare_image(image, self.image_size, self.device)
        with timer("backbone"):
            out = self.network(tensor)
            hypercolumn = out.hypercolumn[0]
        with timer("retrieval"):
            query_global = self.pca.transform(out.global_descriptor[0])
            exclude = None if exclude_reference is None else self.map.index(exclude_reference)
            indices, scores = self.index.search(query_global, cfg.top_k, prior_center,
                                                prior_radius_m, exclude)
        res.reference_indices = [int(i) for i in indices]
        res.reference_names = [self.map.names[i] for i in indices]
        res.retrieval_scores = [float(s) for s in scores]
        if len(indices) == 0:
            res.failure_reason = "no reference image retrieved (prior radius excludes all?)"
            return
        with timer("matching"):
            desc, valid, points3d = self._gather(indices)
            matches = match_sparse_to_dense(hypercolumn, desc, valid, cfg.matcher)
            ok = matches.valid.cpu().numpy()
            uv_cells = matches.query_uv.cpu().numpy()[ok]
            sc = torch.as_tensor(scale, dtype=torch.float64)
            uv_query = scale_pixels(feature_to_image(torch.from_numpy(uv_cells).double(),
                                                     HYPERCOLUMN_STRIDE), 1.0 / sc).numpy()
            p3d = points3d[ok]
            ref_desc = desc[matches.valid]
        res.num_matches = int(ok.sum())
        pnp_camera = self._camera(camera, int(indices[0]))
        with timer("pnp"):
            pnp = ransac_pnp(uv_query, p3d, pnp_camera, cfg.pnp)
        res.num_inliers = pnp.num_inliers
        if not pnp.success:
            res.failure_reason = pnp.reason
            return
        res.pose_rpnp = res.pose = pnp.pose
        res.inlier_keypoints = uv_query[pnp.inliers]
        res.inlier_points3d = p3d[pnp.inliers]
        res.success = True
        if not cfg.refine_enabled:
            return
        with timer("refine"):
            inl = torch.from_numpy(pnp.inliers).to(self.device)
            fmap_camera = pnp_camera.scaled(scale[0] / HYPERCOLUMN_STRIDE,
                                            scale[1] / HYPERCOLUMN_STRIDE)
            refined = self.refiner.refine(
                pnp.pose, torch.from_numpy(res.inlier_points3d).to(self.device),
                ref_desc[inl].float(), hypercolumn, fmap_camera)
        res.refine_reason = refined.reason
        if refined.reason != "too_few_points":
            res.pose_fpnp = res.pose = refined.pose
            res.covariance = refined.covariance
