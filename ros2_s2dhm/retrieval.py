"""Global-descriptor index: top-k reference images by cosine similarity."""
from __future__ import annotations

import numpy as np
import torch


def _tensor(x, dtype, device) -> torch.Tensor:
    """A device tensor copy of an array or tensor (memory maps are read, never aliased)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.from_numpy(np.array(x)).to(device=device, dtype=dtype)


class RetrievalIndex:
    """Reference global descriptors [N,D] (L2-normalised) and camera centres [N,3]."""

    def __init__(self, descriptors, centers, device="cpu"):
        self.descriptors = _tensor(descriptors, torch.float32, device)
        self.centers = _tensor(centers, torch.float64, device)
        if self.descriptors.ndim != 2 or self.centers.shape != (len(self.descriptors), 3):
            raise ValueError(f"RetrievalIndex: descriptors {tuple(self.descriptors.shape)} and "
                             f"centers {tuple(self.centers.shape)} do not describe the same images")

    def __len__(self) -> int:
        return len(self.descriptors)

    def search(self, query: torch.Tensor, k: int, prior_center=None, prior_radius_m=None,
               exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k references for one query descriptor [D].

        prior_center [3] with prior_radius_m keeps only references whose camera centre
        lies within the radius; ``exclude`` is an index (or list) never returned.
        Returns (indices [k'], scores [k']) best first; k' may be 0 when nothing is left.
        """
        scores = self.descriptors @ query.to(self.descriptors.device, torch.float32).reshape(-1)
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
