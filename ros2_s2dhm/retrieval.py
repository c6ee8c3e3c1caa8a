"""Global-descriptor index: top-k reference images by cosine similarity, with hubness reduction.

A *hub* is a reference that is the nearest neighbour of many queries it does not show: a
descriptor near the centre of the reference cloud, which every query far from all references
(night, snow) lands closest to. Cross-domain similarity local scaling (CSLS, Conneau et al.
2018) scores a query q against a reference r as ``2 cos(q, r) - n(r)`` where ``n(r)`` is the
mean similarity of r to its ``k`` nearest other references: a reference that is close to many
others pays for it. (CSLS's query term ``n(q)`` is the same for every reference and is left
out.) ``n`` depends on the map alone, so it is computed once, when the map is built
(:func:`neighbour_similarity`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .features.pca import PCA

#: CSLS neighbourhood size: a reference's hub term is its mean similarity to this many others.
HUB_NEIGHBOURS = 10


def _tensor(x, dtype, device) -> torch.Tensor:
    """A device tensor copy of an array or tensor (memory maps are read, never aliased)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.from_numpy(np.array(x)).to(device=device, dtype=dtype)


@torch.no_grad()
def neighbour_similarity(descriptors, k: int, block: int = 2048) -> np.ndarray:
    """CSLS's reference term: the mean cosine similarity of each reference to its ``k`` most
    similar *other* references. descriptors [N,D] (L2-normalised) -> [N] float32; computed in
    row blocks, so memory is O(block * N). k is clipped to N - 1; N = 1 gives zeros."""
    x = _tensor(descriptors, torch.float32, "cpu")
    n = len(x)
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros(n, np.float32)
    out = torch.empty(n)
    for start in range(0, n, block):
        sims = x[start:start + block] @ x.T
        rows = torch.arange(len(sims))
        sims[rows, rows + start] = -torch.inf  # not its own neighbour
        out[start:start + block] = sims.topk(k, dim=1).values.mean(1)
    return out.numpy()


class RetrievalIndex:
    """Reference global descriptors [N,D] (L2-normalised), camera centres [N,3] and, for
    hubness reduction, each reference's neighbour similarity [N] (None: plain cosine)."""

    def __init__(self, descriptors, centers, device="cpu", neighbour_similarity=None):
        self.descriptors = _tensor(descriptors, torch.float32, device)
        self.centers = _tensor(centers, torch.float64, device)
        if self.descriptors.ndim != 2 or self.centers.shape != (len(self.descriptors), 3):
            raise ValueError(f"RetrievalIndex: descriptors {tuple(self.descriptors.shape)} and "
                             f"centers {tuple(self.centers.shape)} do not describe the same images")
        self.penalty = None
        if neighbour_similarity is not None:
            self.penalty = _tensor(neighbour_similarity, torch.float32, device).reshape(-1)
            if len(self.penalty) != len(self.descriptors):
                raise ValueError(f"RetrievalIndex: {len(self.penalty)} neighbour similarities for "
                                 f"{len(self.descriptors)} references")

    def __len__(self) -> int:
        return len(self.descriptors)

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """[N] ranking scores of one query descriptor [D]: cosine similarity, or CSLS
        ``2 cos - n(r)`` when the index has neighbour similarities (both in [-2, 2])."""
        cos = self.descriptors @ query.to(self.descriptors.device, torch.float32).reshape(-1)
        return cos if self.penalty is None else 2 * cos - self.penalty

    def search(self, query: torch.Tensor, k: int, prior_center=None, prior_radius_m=None,
               exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k references for one query descriptor [D].

        prior_center [3] with prior_radius_m keeps only references whose camera centre
        lies within the radius; ``exclude`` is an index (or list) never returned.
        Returns (indices [k'], scores [k']) best first (:meth:`scores`); k' may be 0 when
        nothing is left.
        """
        scores = self.scores(query)
        keep = torch.ones_like(scores, dtype=torch.bool)
        if prior_center is not None and prior_radius_m is not None:
            c = torch.as_tensor(np.asarray(prior_center, np.float64), device=self.centers.device)
            keep &= torch.linalg.norm(self.centers - c, dim=1) <= float(prior_radius_m)
        if exclude is not None:
            keep[torch.as_tensor(np.atleast_1d(exclude), device=keep.device)] = False
        scores = torch.where(keep, scores, torch.full_like(scores, -torch.inf))
        k = min(int(k), int(keep.sum()))
        top, idx = scores.topk(k) if k > 0 else (scores[:0], scores[:0].long())
        return idx.cpu().numpy(), top.cpu().numpy()


@dataclass
class GlobalIndex:
    """What a map keeps for retrieval: the PCA of the references' NetVLAD descriptors, the
    reduced descriptors [N,d] (L2-normalised) and their neighbour similarities [N] (CSLS)."""

    pca: PCA
    descriptors: np.ndarray
    neighbour_similarity: np.ndarray


def fit_global_index(raw_descriptors, pca_dim: int, whiten: bool = True,
                     hub_neighbours: int = HUB_NEIGHBOURS) -> GlobalIndex:
    """Fit the map's retrieval index on the references' raw global descriptors [N,D]: PCA to
    ``pca_dim`` (at most N - 1), whitened (as NetVLAD and S2DHM do: every direction of the
    references' spread weighs the same, so the few that carry illumination and weather no
    longer dominate), then each reference's neighbour similarity over ``hub_neighbours`` others.
    (With N - 1 <= pca_dim, whitening leaves all references equally similar to each other, and
    the hub term is the same for all: CSLS matters for maps larger than the PCA dimension.)
    The PCA's components are rounded to float16 (:meth:`PCA.rounded_to_half`) before the
    references are projected: the map stores them at half the size."""
    raw = np.asarray(raw_descriptors, np.float32)
    pca = PCA.fit(raw, dim=pca_dim, whiten=whiten).rounded_to_half()
    reduced = np.asarray(pca.transform(raw), np.float32)
    return GlobalIndex(pca, reduced, neighbour_similarity(reduced, hub_neighbours))


def rank_references(index: GlobalIndex, raw_queries, k: int, hubness: bool = True) -> np.ndarray:
    """Top-k reference indices [Q,k] of raw query descriptors [Q,D] against a fitted index, as
    the localizer ranks them (PCA, then CSLS or plain cosine)."""
    queries = np.asarray(index.pca.transform(np.asarray(raw_queries, np.float32)))
    search = RetrievalIndex(index.descriptors, np.zeros((len(index.descriptors), 3)),
                            neighbour_similarity=index.neighbour_similarity if hubness else None)
    k = min(int(k), len(index.descriptors))
    return np.stack([search.search(torch.from_numpy(q), k)[0] for q in queries]) \
        if len(queries) else np.zeros((0, k), np.int64)
