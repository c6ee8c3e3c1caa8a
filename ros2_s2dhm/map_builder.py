"""Build a :class:`ReferenceMap` from a dataset's reference images, resumably.

Per reference image: keypoints chosen for spatial spread (round-robin over a grid of
cells, longest tracks first inside a cell), their 3D points, hypercolumns sampled
bilinearly at the keypoints, the detail features (relu2_2 at stride 2, for the second level
of Feature-metric PnP) sampled there too, and the NetVLAD descriptor.

Compact descriptors: the hypercolumns and detail features of up to ``projection_fit_images``
reference images (spread over the set) are computed first and two PCAs are fitted on a sample
of them, to ``descriptor_dim`` (the matching space) and ``detail_dim`` (the detail level; 128
keeps it unprojected); every image's descriptors are then projected and stored as int8 with one
scale per vector (:mod:`compact_descriptors`). PCA of the global descriptors is fitted at the
end. Every PCA's components are rounded to float16 before use (the map stores them so).
Each image's part is written to ``<out>/parts/`` as soon as it is done, so an interrupted build
resumes where it stopped; the map's arrays are written row by row.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .compact_descriptors import quantize_int8
from .datasets.base import Dataset, read_image
from .features.backbone import DETAIL_DIM, DETAIL_STRIDE, HYPERCOLUMN_STRIDE
from .features.pca import PCA
from .features.preprocess import prepare_image
from .geometry.pixels import image_to_feature, scale_pixels
from .matching import sample_descriptors
from .options import option
from .point_selection import select_spread
from .reference_map import MapWriter, ReferenceMap
from .retrieval import HUB_NEIGHBOURS, fit_global_index

PARTS = "parts"
#: Changes when a part's content changes, so parts of an older build are recomputed.
PARTS_FORMAT = 3


@dataclass
class MapBuildConfig:
    """How a map is built (``build_map``'s flags: ``--image-size``, ``--max-keypoints``, ...)."""

    image_size: int = option(512, "longer image side fed to the network", low=32, high=4096)
    max_keypoints: int = option(4096, "keypoints kept per reference image", low=16)
    grid: int = option(16, "cells per side of the spatial keypoint round-robin", low=1)
    pca_dim: int = option(1024, "global descriptor dimension after PCA", low=1)
    pca_whiten: bool = option(True, "PCA-whiten the global descriptors (NetVLAD's, S2DHM's)")
    hub_neighbours: int = option(HUB_NEIGHBOURS, "retrieval's hub term: a reference's mean "
                                                 "similarity to this many map neighbours", low=1)
    descriptor_dim: int = option(128, "matching-space dimension: PCA of the reference "
                                      "hypercolumns, stored as int8", low=8)
    descriptor_whiten: bool = option(False, "whiten the matching-space PCA")
    detail_dim: int = option(64, "detail-level dimension: PCA of the relu2_2 features at the "
                                 f"keypoints, stored as int8 ({DETAIL_DIM}: unprojected)",
                             low=8, high=DETAIL_DIM)
    projection_fit_images: int = option(64, "reference images whose hypercolumns fit the "
                                            "matching-space PCA", low=1)
    projection_fit_samples: int = option(65536, "hypercolumns sampled to fit it", low=256)


def _part_path(out_dir: Path, i: int) -> Path:
    return out_dir / PARTS / f"{i:06d}.npz"


def _save_part(out_dir: Path, i: int, part: dict) -> None:
    tmp = _part_path(out_dir, i).with_suffix(".tmp.npz")
    np.savez(tmp, **part)
    tmp.replace(_part_path(out_dir, i))


def _build_signature(dataset: Dataset, weights_sha256: str, config: MapBuildConfig) -> dict:
    return {"parts": PARTS_FORMAT, "weights_sha256": weights_sha256, "config": asdict(config),
            "references": [r.name for r in dataset.references]}


@dataclass
class _Projections:
    """The map's two descriptor PCAs: matching space, and detail level (None: unprojected)."""

    matching: PCA
    detail: PCA | None

    def compress(self, part: dict) -> dict:
        """Replace a part's full descriptors (fp16 ``descriptors_full`` [M,C], fp32
        ``detail_full`` [M,128]) by int8 codes and float16 scales: ``descriptors`` and
        ``scales``, ``detail`` and ``detail_scales``."""
        matching = self.matching.transform(torch.from_numpy(part.pop("descriptors_full")).float())
        detail = torch.from_numpy(part.pop("detail_full")).float()
        if self.detail is not None:
            detail = self.detail.transform(detail)
        for codes, scales, x in (("descriptors", "scales", matching),
                                 ("detail", "detail_scales", detail)):
            q, scale = quantize_int8(x)
            part[codes], part[scales] = q.numpy(), scale.numpy()
        return part


@torch.no_grad()
def _compute_part(ref, network, track_lengths, config: MapBuildConfig, device,
                  projections: _Projections | None) -> dict:
    """One reference image's part; descriptors compressed with ``projections``, or kept full
    (keys ``descriptors_full``, fp16, and ``detail_full``) while they are not fitted yet."""
    image = read_image(ref.path)
    tensor, scale = prepare_image(image, config.image_size, device)
    out = network(tensor)
    sel = select_spread(ref.keypoints, track_lengths[ref.point_ids], ref.camera.width,
                           ref.camera.height, config.max_keypoints, config.grid)
    kps = ref.keypoints[sel]
    pixels = scale_pixels(torch.from_numpy(kps).double(), torch.tensor(scale).double())
    desc = sample_descriptors(out.hypercolumn[0],
                              image_to_feature(pixels, HYPERCOLUMN_STRIDE).to(device).float())
    detail = sample_descriptors(out.detail[0],
                                image_to_feature(pixels, DETAIL_STRIDE).to(device).float())
    part = {"keypoints": kps.astype(np.float32), "point_ids": ref.point_ids[sel],
            "global_descriptor": out.global_descriptor[0].float().cpu().numpy(),
            "descriptors_full": desc.half().cpu().numpy(), "detail_full": detail.cpu().numpy()}
    return part if projections is None else projections.compress(part)


def _fit_projections(out_dir: Path, fit_ids: list[int], config: MapBuildConfig) -> _Projections:
    """The matching-space and detail PCAs from one seeded sample of the fit images' keypoints."""
    rng = np.random.default_rng(0)
    per_image = max(1, config.projection_fit_samples // max(1, len(fit_ids)))
    samples = {"descriptors_full": [], "detail_full": []}
    for i in fit_ids:
        with np.load(_part_path(out_dir, i)) as part:
            n = len(part["keypoints"])
            take = np.sort(rng.choice(n, min(per_image, n), replace=False)) if n else []
            for key, chosen in samples.items():
                chosen.append(part[key][take].astype(np.float32))
    fit = {k: np.concatenate(v) for k, v in samples.items()}
    matching = PCA.fit(fit["descriptors_full"], dim=config.descriptor_dim,
                       whiten=config.descriptor_whiten).rounded_to_half()
    detail = (PCA.fit(fit["detail_full"], dim=config.detail_dim).rounded_to_half()
              if config.detail_dim < DETAIL_DIM else None)
    return _Projections(matching, detail)


def build_reference_map(dataset: Dataset, network, weights_sha256: str, weights_kind: str,
                        out_dir, config: MapBuildConfig | None = None, device="cpu",
                        progress: bool = True) -> ReferenceMap:
    """Compute and save the map of ``dataset.references`` into ``out_dir``; returns it opened."""
    config = config or MapBuildConfig()
    out_dir = Path(out_dir)
    parts = out_dir / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    signature = _build_signature(dataset, weights_sha256, config)
    sig_path = parts / "build.json"
    if sig_path.exists() and json.loads(sig_path.read_text()) != signature:
        shutil.rmtree(parts)  # parts of another build (other weights/config/images): start over
        parts.mkdir(parents=True)
    sig_path.write_text(json.dumps(signature))

    network = network.to(device).eval()
    refs = dataset.references
    n = len(refs)
    track_lengths = np.bincount(np.concatenate([r.point_ids for r in refs]),
                                minlength=len(dataset.points3d))
    proj_paths = {"matching": parts / "projection.npz", "detail": parts / "detail_projection.npz"}
    fit_ids = sorted(set(np.linspace(0, n - 1, min(n, config.projection_fit_images))
                         .round().astype(int).tolist()))
    if proj_paths["matching"].exists():
        projections = _Projections(*(PCA.from_state_dict(dict(np.load(path)))
                                     if path.exists() else None for path in proj_paths.values()))
    else:
        todo = [i for i in fit_ids if not _part_path(out_dir, i).exists()]
        for i in tqdm(todo, desc="hypercolumns (projection fit)", disable=not progress, unit="img"):
            _save_part(out_dir, i, _compute_part(refs[i], network, track_lengths, config, device, None))
        projections = _fit_projections(out_dir, fit_ids, config)
        if projections.detail is not None:
            np.savez(proj_paths["detail"], **projections.detail.state_dict())
        np.savez(proj_paths["matching"], **projections.matching.state_dict())  # last: marks the fit done
    todo = [i for i in range(n) if not _part_path(out_dir, i).exists()]
    for i in tqdm(todo, desc="reference hypercolumns", disable=not progress, unit="img"):
        _save_part(out_dir, i, _compute_part(refs[i], network, track_lengths, config, device, projections))

    k = 1
    for i in range(n):
        with np.load(_part_path(out_dir, i)) as p:
            k = max(k, len(p["keypoints"]))
    detail_dim = projections.detail.output_dim if projections.detail is not None else DETAIL_DIM
    writer = MapWriter(out_dir, np.stack([r.pose.R for r in refs]), np.stack([r.pose.t for r in refs]),
                       k, projections.matching.output_dim, detail_dim)
    globals_ = []
    for i in range(n):
        p = dict(np.load(_part_path(out_dir, i)))
        if "descriptors_full" in p:
            p = projections.compress(p)
        writer.set_row(i, p["keypoints"], dataset.points3d[p["point_ids"]], p["descriptors"], p["scales"],
                       p["detail"], p["detail_scales"])
        globals_.append(p["global_descriptor"])
    index = fit_global_index(np.stack(globals_), config.pca_dim, config.pca_whiten,
                             config.hub_neighbours)
    writer.finish(
        names=[r.name for r in refs], cameras=[r.camera for r in refs],
        global_descriptors=index.descriptors, pca=index.pca.state_dict(),
        projection=projections.matching.state_dict(),
        detail_projection=projections.detail.state_dict() if projections.detail else None,
        neighbour_similarity=index.neighbour_similarity,
        weights_sha256=weights_sha256, weights_kind=weights_kind, image_size=config.image_size,
        config=asdict(config), unit=dataset.unit)
    shutil.rmtree(parts)
    return ReferenceMap.load(out_dir)
