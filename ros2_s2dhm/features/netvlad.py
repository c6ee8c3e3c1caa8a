"""NetVLAD pooling (Arandjelovic et al., as used by S2DHM)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NetVLAD", "NETVLAD_INIT_ALPHA"]

# Assignment sharpness of the data-free initialisation (conv.weight = alpha * centroids),
# the default of the lyakaap/NetVLAD-pytorch implementation S2DHM derives from.
NETVLAD_INIT_ALPHA = 100.0


class NetVLAD(nn.Module):
    """NetVLAD layer: soft-assigned residuals to ``num_clusters`` centroids.

    Parameters (state dict keys as in S2DHM's ``pool`` module):
        centroids [K, D]; conv.weight [K, D, 1, 1]; conv.bias [K] only when ``bias=True``
        (S2DHM/pytorch-NetVLAD checkpoints have no bias).
    """

    def __init__(self, num_clusters: int = 64, dim: int = 512, bias: bool = False):
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=bias)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    @torch.no_grad()
    def reset_parameters(self, alpha: float = NETVLAD_INIT_ALPHA) -> None:
        """Data-free init from the current RNG: unit centroids ~ normalised N(0, I) and
        ``conv.weight = alpha * centroids`` (so soft assignment follows the nearest centroid),
        bias 0."""
        self.set_centroids(F.normalize(torch.randn(self.num_clusters, self.dim), dim=1), alpha)

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor, alpha: float = NETVLAD_INIT_ALPHA) -> None:
        """centroids [K, D] (unit rows); soft assignment follows the nearest one:
        ``conv.weight = alpha * centroids``, bias 0."""
        self.centroids.copy_(centroids)
        self.conv.weight.copy_(alpha * centroids[:, :, None, None])
        if self.conv.bias is not None:
            self.conv.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, D, H, W] (conv5_3) -> descriptor [B, K*D], L2-normalised, float32.

        Steps: descriptor-wise L2 normalisation, softmax assignment over the 1x1 conv,
        residual aggregation sum_i a_ki (x_i - c_k), intra-normalisation per cluster,
        flatten, global L2 normalisation.
        """
        x = F.normalize(features.float(), p=2, dim=1)
        batch = x.shape[0]
        assignment = F.softmax(self.conv(x).flatten(2), dim=1)          # [B, K, N]
        x = x.flatten(2)                                                   # [B, D, N]
        vlad = torch.bmm(assignment, x.transpose(1, 2))                    # [B, K, D]
        vlad = vlad - assignment.sum(dim=2, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)
        return F.normalize(vlad.reshape(batch, -1), p=2, dim=1)
