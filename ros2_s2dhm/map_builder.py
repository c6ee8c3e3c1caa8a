"""Build a :class:`ReferenceMap` from a dataset's reference images, resumably.

Per reference image: keypoints chosen for spatial spread (round-robin over a grid of
cells, longest tracks first inside a cell), their 3D points, hypercolumns sampled
bilinearly at the keypoints (fp16) and the NetVLAD descriptor; PCA is fitted on all
reference descriptors at the end. Each image's part is written to
``<out>/parts/`` as soon as it is done, so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .datasets.base import Dataset, read_image
from .features.backbone import HYPERCOLUMN_STRIDE
from .features.netvlad import PCA
from .features.preprocess import prepare_image
from .geometry.pixels import image_to_feature, scale_pixels
from .matching import sample_descriptors
from .reference_map import ReferenceMap

PARTS = "parts"


@dataclass
class MapBuildConfig:
    """image_size: longer side fed to the network; max_keypoints per reference image;
    grid: cells per side for the spatial round-robin; pca_dim: global descriptor size."""

    image_size: int = 512
    max_keypoints: int = 4096
    grid: int = 16
    pca_dim: int = 1024


def select_keypoints(keypoints: np.ndarray, track_lengths: np.ndarray, width: int, height: int,
                     max_keypoints: int, grid: int) -> np.ndarray:
    """Indices of at most ``max_keypoints`` keypoints [M,2] spread over the image.

    Keypoints are binned into grid x grid cells; cells are visited round-robin, each
    giving its next-longest-track keypoint, so no image region (e.g. the far end of a
    street where the long tracks sit) takes the whole budget.
    """
    m = len(keypoints)
    if m <= max_keypoints:
        return np.arange(m)
    cx = np.clip((keypoints[:, 0] + 0.5) * grid / width, 0, grid - 1).astype(np.int64)
    cy = np.clip((keypoints[:, 1] + 0.5) * grid / height, 0, grid - 1).astype(np.int64)
    cell = cy * grid + cx
    order = np.lexsort((-track_lengths, cell))  # by cell, then longest track first
    sorted_cells = cell[order]
    first = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(m) - first  # rank of each keypoint inside its cell
    pick = order[np.lexsort((sorted_cells, rank))][:max_keypoints]
    return np.sort(pick)


def _part_path(out_dir: Path, i: int) -> Path:
    return out_dir / PARTS / f"{i:06d}.npz"


def _build_signature(dataset: Dataset, weights_sha256: str, config: MapBuildConfig) -> dict:
    return {"weights_sha256": weights_sha256, "config": asdict(config),
            "references": [r.name for r in dataset.references]}


@torch.no_grad()
def _compute_part(ref, network, track_lengths, config: MapBuildConfig, device) -> dict:
    image = read_image(ref.path)
    tensor, scale = prepare_image(image, config.image_size, device)
    out = network(tensor)
    sel = select_keypoints(ref.keypoints, track_lengths[ref.point_ids], ref.camera.width,
                           ref.camera.height, config.max_keypoints, config.grid)
    kps = ref.keypoints[sel]
    cells = image_to_feature(scale_pixels(torch.from_numpy(kps).double(), torch.tensor(scale).double()),
                             HYPERCOLUMN_STRIDE)
    desc = sample_descriptors(out.hypercolumn[0], cells.to(device).float())
    return {"keypoints": kps.astype(np.float32), "point_ids": ref.point_ids[sel],
            "descriptors": desc.half().cpu().numpy(),
            "global_descriptor": out.global_descriptor[0].float().cpu().numpy()}


def build_reference_map(dataset: Dataset, network, weights_sha256: str, weights_kind: str,
                        out_dir, config: MapBuildConfig | None = None, device="cpu",
                        progress: bool = True) -> ReferenceMap:
    """Compute and save the map of ``dataset.references`` into ``out_dir``; returns it loaded."""
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
    track_lengths = np.bincount(np.concatenate([r.point_ids for r in dataset.references]),
                                minlength=len(dataset.points3d))
    todo = [i for i in range(len(dataset.references)) if not _part_path(out_dir, i).exists()]
    for i in tqdm(todo, desc="reference hypercolumns", disable=not progress, unit="img"):
        part = _compute_part(dataset.references[i], network, track_lengths, config, device)
        tmp = _part_path(out_dir, i).with_suffix(".tmp.npz")
        np.savez(tmp, **part)
        tmp.replace(_part_path(out_dir, i))

    loaded = [np.load(_part_path(out_dir, i)) for i in range(len(dataset.references))]
    n, k = len(loaded), max(1, max(len(p["keypoints"]) for p in loaded))
    c = loaded[0]["descriptors"].shape[1]
    keypoints = np.zeros((n, k, 2), np.float32)
    points3d = np.zeros((n, k, 3), np.float64)
    valid = np.zeros((n, k), bool)
    descriptors = np.zeros((n, k, c), np.float16)
    for i, p in enumerate(loaded):
        m = len(p["keypoints"])
        keypoints[i, :m] = p["keypoints"]
        points3d[i, :m] = dataset.points3d[p["point_ids"]]
        valid[i, :m] = True
        descriptors[i, :m] = p["descriptors"]
    globals_ = np.stack([p["global_descriptor"] for p in loaded]).astype(np.float32)
    pca = PCA.fit(globals_, dim=config.pca_dim)
    reduced = np.asarray(pca.transform(torch.from_numpy(globals_)), np.float32)

    refs = dataset.references
    ref_map = ReferenceMap(
        names=[r.name for r in refs], cameras=[r.camera for r in refs],
        rotations=np.stack([r.pose.R for r in refs]), translations=np.stack([r.pose.t for r in refs]),
        keypoints=keypoints, points3d=points3d, valid=valid, descriptors=descriptors,
        global_descriptors=reduced, pca=pca.state_dict(), weights_sha256=weights_sha256,
        weights_kind=weights_kind, image_size=config.image_size, config=asdict(config))
    ref_map.save(out_dir)
    shutil.rmtree(parts)
    return ReferenceMap.load(out_dir)
