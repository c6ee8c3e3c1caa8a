"""Correspondence losses: double-margin contrastive (DMC) and Gauss-Newton (GN-Net).

All functions take one feature map per image, ``(C, H, W)``, already L2-normalised
per pixel, and points in that feature map's pixel coordinates (the centre of the
top-left cell is (0, 0); image pixels are converted with
``ros2_s2dhm.geometry.pixels.image_to_feature``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..feature_sampling import feature_gradients, interpolate_bilinear

__all__ = [
    "sample_features", "feature_gradients", "dmc_loss", "gauss_newton_loss",
    "DMCTerms", "GNTerms",
]


def sample_features(features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of a feature map (C, H, W) at (N, 2) (x, y) feature pixels -> (N, C).

    Exact at integer positions; points outside are clamped to the border.
    """
    return interpolate_bilinear(features, xy)[0]


@dataclass
class DMCTerms:
    """Double-margin contrastive loss: ``loss = positive + negative`` (scalars)."""

    loss: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def dmc_loss(d_pos: torch.Tensor, d_neg: torch.Tensor, margin_pos: float = 0.1,
             margin_neg: float = 1.0) -> DMCTerms:
    """L+ = mean max(0, D+ - M+)^2, L- = mean max(0, M- - D-)^2.

    d_pos: (N,) descriptor distances of true matches; d_neg: (K,) of mined negatives.
    An empty set contributes zero.
    """
    positive = (d_pos - margin_pos).clamp(min=0).pow(2).mean() if d_pos.numel() else d_pos.new_zeros(())
    negative = (margin_neg - d_neg).clamp(min=0).pow(2).mean() if d_neg.numel() else d_neg.new_zeros(())
    return DMCTerms(positive + negative, positive, negative)


@dataclass
class GNTerms:
    """Gauss-Newton loss ``loss = w1 * e1 + w2 * e2`` (means over points) and the
    number of points that entered it."""

    loss: torch.Tensor
    e1: torch.Tensor
    e2: torch.Tensor
    num_points: int


def gauss_newton_loss(desc_a: torch.Tensor, features_b: torch.Tensor, target_b: torch.Tensor,
                      start_b: torch.Tensor, e1_weight: float = 1.0, e2_weight: float = 2.0 / 7.0,
                      damping: float = 1e-6) -> GNTerms:
    """GN-Net loss of one Gauss-Newton step towards the true match.

    desc_a: (N, C) descriptors of the points in image a; features_b: (C, H, W) map of
    image b; target_b: (N, 2) true matches in b; start_b: (N, 2) start points (within
    about one pixel of the target), all in feature pixels of b.

    From x_s = start_b: r = F_b(x_s) - desc_a, J = dF_b/dx (x_s) (central differences
    of the same normalised map), H = J^T J + damping * I, mu = x_s - H^-1 J^T r;
    e1 = 0.5 (x* - mu)^T H (x* - mu), e2 = log(2 pi) - 0.5 log det H.
    """
    if desc_a.shape[0] == 0:
        zero = features_b.sum() * 0.0
        return GNTerms(zero, zero, zero, 0)
    grad_x, grad_y = feature_gradients(features_b)
    stacked = torch.cat([features_b, grad_x, grad_y], dim=0)
    sampled = sample_features(stacked, start_b)
    channels = features_b.shape[0]
    residual = sampled[:, :channels] - desc_a                                   # (N, C)
    jacobian = torch.stack([sampled[:, channels:2 * channels], sampled[:, 2 * channels:]], dim=-1)  # (N, C, 2)
    eye = torch.eye(2, dtype=jacobian.dtype, device=jacobian.device)
    hessian = jacobian.transpose(1, 2) @ jacobian + damping * eye               # (N, 2, 2)
    gradient = (jacobian.transpose(1, 2) @ residual[..., None])[..., 0]         # (N, 2)
    mu = start_b.to(hessian.dtype) - torch.linalg.solve(hessian, gradient)
    error = (target_b.to(hessian.dtype) - mu)[..., None]                        # (N, 2, 1)
    e1 = 0.5 * (error.transpose(1, 2) @ hessian @ error)[:, 0, 0]
    e2 = math.log(2.0 * math.pi) - 0.5 * torch.logdet(hessian)
    e1, e2 = e1.mean(), e2.mean()
    return GNTerms(e1_weight * e1 + e2_weight * e2, e1, e2, int(desc_a.shape[0]))
