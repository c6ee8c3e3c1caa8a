"""NetVLAD training for place retrieval from known camera poses (the encoder stays frozen).

Each query image (any condition) has positives, the reference images whose camera centre
lies within ``positive_radius_m``, and negatives, those farther than ``negative_radius_m``.
The loss is NetVLAD's weakly supervised triplet ranking loss: the best positive must be
closer than every negative by a margin (squared descriptor distances). Only the NetVLAD
layer is trained, on conv5_3 features computed once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..features.preprocess import prepare_image


@dataclass
class RetrievalConfig:
    """Hyperparameters of NetVLAD training (defaults: NetVLAD's margin 0.1, Adam)."""

    steps: int = 300
    lr: float = 1e-3
    margin: float = 0.1
    positive_radius_m: float = 3.0
    negative_radius_m: float = 15.0
    image_size: int = 320
    init_from_data: bool = True
    seed: int = 0


@dataclass
class PlaceSet:
    """One traversal set: conv5_3 features [512,h,w] and camera centres [3] of its images."""

    reference_features: list[torch.Tensor]
    reference_centers: np.ndarray
    query_features: list[torch.Tensor]
    query_centers: np.ndarray


@torch.no_grad()
def conv5_features(network, images, image_size: int, device) -> list[torch.Tensor]:
    """conv5_3 maps [512,h,w] of RGB images (HxWx3 uint8) from the frozen encoder."""
    out = []
    for image in images:
        tensor, _ = prepare_image(image, image_size, device)
        out.append(network.encoder(tensor)[0].float())
    return out


def triplet_masks(query_centers: np.ndarray, reference_centers: np.ndarray, positive_radius_m: float,
                  negative_radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives): bool [Q,R] by camera-centre distance."""
    d = np.linalg.norm(query_centers[:, None] - reference_centers[None], axis=2)
    return d <= positive_radius_m, d > negative_radius_m


def triplet_loss(query: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                 margin: float) -> torch.Tensor:
    """query [D], positives [P,D], negatives [N,D] -> mean over negatives of
    max(0, min_p |q-p|^2 + margin - |q-n|^2)."""
    best = (positives - query).square().sum(1).min()
    return F.relu(best + margin - (negatives - query).square().sum(1)).mean()


@torch.no_grad()
def initialise_centroids(netvlad, features: list[torch.Tensor], seed: int) -> None:
    """Centroids = randomly drawn normalised conv5_3 descriptors (a k-means-free data init)."""
    x = torch.cat([F.normalize(f, dim=0).flatten(1).T for f in features])
    g = torch.Generator().manual_seed(seed)
    netvlad.set_centroids(x[torch.randperm(len(x), generator=g)[:netvlad.num_clusters].to(x.device)])


def train_netvlad(netvlad, sets: list[PlaceSet], config: RetrievalConfig,
                  progress: bool = True) -> list[float]:
    """Train ``netvlad`` in place on the place sets; returns the loss of every step."""
    rng = np.random.default_rng(config.seed)
    if config.init_from_data:
        initialise_centroids(netvlad, [f for s in sets for f in s.reference_features], config.seed)
    masks = [triplet_masks(s.query_centers, s.reference_centers, config.positive_radius_m,
                           config.negative_radius_m) for s in sets]
    usable = [(i, q) for i, (pos, neg) in enumerate(masks) for q in range(len(pos))
              if pos[q].any() and neg[q].any()]
    if not usable:
        raise ValueError("no query has both a positive and a negative reference: check the radii")
    optimizer = torch.optim.Adam(netvlad.parameters(), lr=config.lr)
    netvlad.train()
    losses = []
    for _ in tqdm(range(config.steps), desc="NetVLAD", disable=not progress):
        i, q = usable[rng.integers(len(usable))]
        s, (pos, neg) = sets[i], masks[i]
        refs = np.flatnonzero(pos[q] | neg[q])
        desc = netvlad(torch.stack([s.query_features[q], *[s.reference_features[r] for r in refs]]))
        is_pos = torch.from_numpy(pos[q][refs]).to(desc.device)
        loss = triplet_loss(desc[0], desc[1:][is_pos], desc[1:][~is_pos], config.margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    netvlad.eval()
    return losses


@torch.no_grad()
def retrieval_recall(netvlad, sets: list[PlaceSet], radius_m: float) -> float:
    """Fraction of queries whose top-1 reference lies within ``radius_m``."""
    hits, total = 0, 0
    for s in sets:
        refs = torch.cat([netvlad(f[None]) for f in s.reference_features])
        for f, c in zip(s.query_features, s.query_centers):
            top = int((refs @ netvlad(f[None])[0]).argmax())
            hits += np.linalg.norm(s.reference_centers[top] - c) <= radius_m
            total += 1
    return hits / max(total, 1)
