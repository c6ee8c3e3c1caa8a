"""Build a :class:`ReferenceMap` from a dataset's reference images, resumably.

Per reference image: keypoints chosen for spatial spread (round-robin over a grid of
cells, longest tracks first inside a cell), their 3D points, hypercolumns sampled
bilinearly at the keypoints, the detail features (relu2_2 at stride 2, for the second level
of Feature-metric PnP; int8, not projected) sampled there too, and the NetVLAD descriptor.

Compact descriptors: the hypercolumns of up to ``projection_fit_images`` reference images
(spread over the set) are computed first and a PCA to ``descriptor_dim`` is fitted on a sample
of them; every image's descriptors are then projected with it and stored as int8 with one scale
per vector (:mod:`compact_descriptors`). PCA of the global descriptors is fitted at the end.
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
PARTS_FORMAT = 2


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


def _compress(descriptors: torch.Tensor, projection: PCA) -> dict:
    """Full hypercolumns [M,C] -> {"descriptors": int8 [M,d], "scales": f16 [M]}."""
    q, scale = quantize_int8(projection.transform(descriptors.float()))
    return {"descriptors": q.cpu().numpy(), "scales": scale.cpu().numpy()}


@torch.no_grad()
def _compute_part(ref, network, track_lengths, config: MapBuildConfig, device,
                  projection: PCA | None) -> dict:
    """One reference image's part; descriptors compressed with ``projection``, or kept full
    (fp16, key ``descriptors_full``) while the projection is not fitted yet."""
    image = read_image(ref.path)
    tensor, scale = prepare_image(image, config.image_size, device)
    out = network(tensor)
    sel = select_spread(ref.keypoints, track_lengths[ref.point_ids], ref.camera.width,
                           ref.camera.height, config.max_keypoints, config.grid)
    kps = ref.keypoints[sel]
    pixels = scale_pixels(torch.from_numpy(kps).double(), torch.tensor(scale).double())
    desc = sample_descriptors(out.hypercolumn[0],
                              image_to_feature(pixels, HYPERCOLUMN_STRIDE).to(device).float())
    detail, detail_scales = quantize_int8(sample_descriptors(
        out.detail[0], image_to_feature(pixels, DETAIL_STRIDE).to(device).float()))
    part = {"keypoints": kps.astype(np.float32), "point_ids": ref.point_ids[sel],
            "global_descriptor": out.global_descriptor[0].float().cpu().numpy(),
            "detail": detail.cpu().numpy(), "detail_scales": detail_scales.cpu().numpy()}
    if projection is None:
        part["descriptors_full"] = desc.half().cpu().numpy()
    else:
        part.update(_compress(desc, projection))
    return part


def _fit_projection(out_dir: Path, fit_ids: list[int], config: MapBuildConfig) -> PCA:
    """The matching-space PCA from a seeded sample of the fit images' full hypercolumns."""
    rng = np.random.default_rng(0)
    per_image = max(1, config.projection_fit_samples // max(1, len(fit_ids)))
    samples = []
    for i in fit_ids:
        full = np.load(_part_path(out_dir, i))["descriptors_full"]
        take = rng.choice(len(full), min(per_image, len(full)), replace=False) if len(full) else []
        samples.append(full[np.sort(take)].astype(np.float32))
    return PCA.fit(np.concatenate(samples), dim=config.descriptor_dim, whiten=config.descriptor_whiten)


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
    proj_path = parts / "projection.npz"
    fit_ids = sorted(set(np.linspace(0, n - 1, min(n, config.projection_fit_images))
                         .round().astype(int).tolist()))
    if proj_path.exists():
        projection = PCA.from_state_dict(dict(np.load(proj_path)))
    else:
        todo = [i for i in fit_ids if not _part_path(out_dir, i).exists()]
        for i in tqdm(todo, desc="hypercolumns (projection fit)", disable=not progress, unit="img"):
            _save_part(out_dir, i, _compute_part(refs[i], network, track_lengths, config, device, None))
        projection = _fit_projection(out_dir, fit_ids, config)
        np.savez(proj_path, **projection.state_dict())
    todo = [i for i in range(n) if not _part_path(out_dir, i).exists()]
    for i in tqdm(todo, desc="reference hypercolumns", disable=not progress, unit="img"):
        _save_part(out_dir, i, _compute_part(refs[i], network, track_lengths, config, device, projection))

    k = 1
    for i in range(n):
        with np.load(_part_path(out_dir, i)) as p:
            k = max(k, len(p["keypoints"]))
    writer = MapWriter(out_dir, n, k, projection.output_dim, DETAIL_DIM)
    globals_ = []
    for i in range(n):
        p = dict(np.load(_part_path(out_dir, i)))
        if "descriptors_full" in p:
            p.update(_compress(torch.from_numpy(p["descriptors_full"]), projection))
        writer.set_row(i, p["keypoints"], dataset.points3d[p["point_ids"]], p["descriptors"], p["scales"],
                       p["detail"], p["detail_scales"])
        globals_.append(p["global_descriptor"])
    index = fit_global_index(np.stack(globals_), config.pca_dim, config.pca_whiten,
                             config.hub_neighbours)
    writer.finish(
        names=[r.name for r in refs], cameras=[r.camera for r in refs],
        rotations=np.stack([r.pose.R for r in refs]), translations=np.stack([r.pose.t for r in refs]),
        global_descriptors=index.descriptors, pca=index.pca.state_dict(),
        projection=projection.state_dict(), neighbour_similarity=index.neighbour_similarity,
        weights_sha256=weights_sha256, weights_kind=weights_kind, image_size=config.image_size,
        config=asdict(config), unit=dataset.unit)
    shutil.rmtree(parts)
    return ReferenceMap.load(out_dir)
