"""PCA projection followed by L2 re-normalisation.

One implementation for both places the pipeline reduces a descriptor: NetVLAD global
descriptors (retrieval) and hypercolumns (the compact matching space of the map).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PCA"]


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class PCA:
    """PCA projection of global descriptors, followed by L2 re-normalisation.

    Attributes: mean [D] float32, components [d, D] float32 (orthonormal rows, sorted by
    decreasing variance, sign fixed so the largest-magnitude entry of each row is positive),
    explained_variance [d] float32, whiten bool.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray,
                 explained_variance: np.ndarray, whiten: bool = False):
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.components = np.ascontiguousarray(components, dtype=np.float32)
        self.explained_variance = np.ascontiguousarray(explained_variance, dtype=np.float32)
        self.whiten = bool(whiten)
        d, dim = self.components.shape if self.components.ndim == 2 else (None, None)
        if (d is None or self.mean.shape != (dim,)
                or self.explained_variance.shape != (d,)):
            raise ValueError(
                f"PCA: inconsistent shapes mean {self.mean.shape}, components "
                f"{self.components.shape}, explained_variance {self.explained_variance.shape}; "
                "expected (D,), (d, D), (d,)")

    @property
    def input_dim(self) -> int:
        return self.components.shape[1]

    @property
    def output_dim(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, descriptors, dim: int = 1024, whiten: bool = False,
            device: str | torch.device | None = None, seed: int = 0) -> "PCA":
        """Fit on reference descriptors [N, D] (numpy or torch).

        The output dimension is ``min(dim, N - 1, D)``. Exact SVD when N <= 4096, otherwise a
        seeded randomised SVD (``torch.svd_lowrank``). Computation runs on ``device``
        (default: the tensor's device, CPU for numpy).
        """
        if isinstance(descriptors, torch.Tensor):
            x = descriptors.detach()
            device = x.device if device is None else device
        else:
            x = torch.from_numpy(np.asarray(descriptors))
        x = x.to(device=device or "cpu", dtype=torch.float32)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"PCA.fit: expected descriptors [N >= 2, D], got {tuple(x.shape)}")
        if dim < 1:
            raise ValueError(f"PCA.fit: dim must be >= 1, got {dim}")
        n, d_in = x.shape
        out_dim = min(int(dim), n - 1, d_in)
        mean = x.mean(dim=0)
        xc = x - mean
        if n <= 4096:
            _, s, vh = torch.linalg.svd(xc, full_matrices=False)
            s, components = s[:out_dim], vh[:out_dim]
        else:
            with torch.random.fork_rng(devices=[xc.device] if xc.is_cuda else []):
                torch.manual_seed(seed)
                _, s, v = torch.svd_lowrank(xc, q=min(out_dim + 16, n, d_in), niter=4)
            s, components = s[:out_dim], v[:, :out_dim].T
        rows = torch.arange(out_dim, device=components.device)
        signs = torch.sign(components[rows, components.abs().argmax(dim=1)])
        components = components * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        variance = s.square() / (n - 1)
        return cls(_as_numpy(mean), _as_numpy(components), _as_numpy(variance), whiten)

    def transform(self, x):
        """x [..., D] (numpy or torch) -> [..., d], L2-normalised, same type (and device)."""
        is_torch = isinstance(x, torch.Tensor)
        t = x.detach().float() if is_torch else torch.from_numpy(np.asarray(x, dtype=np.float32))
        if t.shape[-1] != self.input_dim:
            raise ValueError(f"PCA.transform: expected last dimension {self.input_dim}, "
                             f"got shape {tuple(t.shape)}")
        mean, components, scale = self.tensors(t.device)
        y = t @ components.T - mean @ components.T  # no centred copy of a large input
        if self.whiten:
            y = y / scale
        y = F.normalize(y, p=2, dim=-1)
        return y if is_torch else y.numpy()

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mean [D], components [d, D] and whitening scale [d] (the square roots of the
        explained variances) as float32 tensors on ``device``, uploaded once."""
        cache = self.__dict__.setdefault("_tensors", {})
        if device not in cache:
            cache[device] = (torch.from_numpy(np.array(self.mean)).to(device),
                             torch.from_numpy(np.array(self.components)).to(device),
                             torch.from_numpy(np.array(self.explained_variance)).to(device)
                             .clamp_min(1e-12).sqrt())
        return cache[device]

    def rounded_to_half(self) -> "PCA":
        """This PCA with its components rounded to float16 values (still float32 in memory).

        A map fits its projections, rounds them, and computes what it stores with the rounded
        ones, so queries projected later with the stored (float16) components see exactly the
        projection the map used; :meth:`state_dict` then stores the components as float16, at
        half the size. The rounding moves a projected unit vector by about 5e-4.
        """
        return PCA(self.mean, self.components.astype(np.float16).astype(np.float32),
                   self.explained_variance, self.whiten)

    def state_dict(self) -> dict[str, np.ndarray]:
        """numpy arrays: mean [D], components [d, D], explained_variance [d], whiten () bool.

        The components are float16 when every one of them is a float16 value (a PCA made by
        :meth:`rounded_to_half`: the conversion is exact), float32 otherwise."""
        half = self.components.astype(np.float16)
        exact = np.array_equal(half.astype(np.float32), self.components)
        return {"mean": self.mean.copy(), "components": half if exact else self.components.copy(),
                "explained_variance": self.explained_variance.copy(),
                "whiten": np.array(self.whiten)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PCA":
        """Inverse of :meth:`state_dict`; raises ValueError naming a missing or malformed field."""
        for key in ("mean", "components"):
            if key not in state:
                raise ValueError(f"PCA state: missing field '{key}'")
        components = _as_numpy(state["components"])
        variance = state.get("explained_variance")
        variance = (np.ones(components.shape[0], np.float32) if variance is None
                    else _as_numpy(variance))
        return cls(_as_numpy(state["mean"]), components, variance,
                   bool(_as_numpy(state.get("whiten", False))))
