"""VGG-16 encoder with S2DHM hypercolumn taps and a NetVLAD head, in one pass.

Layer indices follow ``torchvision.models.vgg16().features`` (``features[:-2]``: up to and
including conv5_3 at index 28, without relu5_3 and pool5), so S2DHM, gn_net and torchvision
state dicts map 1:1 onto ``encoder.<i>``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ros2_s2dhm.features.netvlad import NetVLAD

__all__ = ["HYPERCOLUMN_LAYERS", "HYPERCOLUMN_STRIDE", "HYPERCOLUMN_DIM", "TAP_STRIDES",
           "TAP_CHANNELS", "DETAIL_LAYER", "DETAIL_STRIDE", "DETAIL_DIM", "NetworkOutput", "S2DHMNetwork", "build_encoder", "hypercolumn_from_taps"]

# Inputs of these encoder layers: relu3_2, pool3, relu4_2, pool4, relu5_2.
HYPERCOLUMN_LAYERS = (14, 17, 21, 24, 28)
TAP_STRIDES = (4, 8, 8, 16, 16)
TAP_CHANNELS = (256, 256, 512, 512, 512)
HYPERCOLUMN_STRIDE = 4
HYPERCOLUMN_DIM = sum(TAP_CHANNELS)  # 2048
# The detail level of Feature-metric PnP: the input of encoder layer 9 (relu2_2, before pool2),
# 128 channels at stride 2, a finer map than the hypercolumn's 1/4 (the paper's stated limit).
DETAIL_LAYER = 9
DETAIL_STRIDE = 2
DETAIL_DIM = 128
ENCODER_DIM = 512                    # conv5_3 channels, NetVLAD input
NUM_ENCODER_LAYERS = 29              # features[:-2] of VGG-16


@dataclass
class NetworkOutput:
    """hypercolumn [B, 2048, H//4, W//4] float32, unit L2 norm per pixel (None when not asked
    for: then ``taps`` holds its five sources, [B, C_t, H//s_t, W//s_t] at TAP_STRIDES s_t,
    for ``compact_descriptors.project_taps``);
    global_descriptor [B, K*512] float32, unit L2 norm;
    detail [B, 128, H//2, W//2] float32, relu2_2 with unit L2 norm per pixel (pixel u of the
    input at (u + 0.5) / 2 - 0.5), None when not asked for."""

    hypercolumn: torch.Tensor | None
    global_descriptor: torch.Tensor
    detail: torch.Tensor | None = None
    taps: list[torch.Tensor] | None = None


def build_encoder() -> nn.Sequential:
    """VGG-16 ``features[:-2]`` (conv1_1 .. conv5_3), torchvision's layer layout."""
    return nn.Sequential(*list(make_layers(cfgs["D"], batch_norm=False))[:NUM_ENCODER_LAYERS])


def upsample_aligned(x: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling by an integer ``factor`` that keeps the pixel-centre convention
    u_fine = (u_coarse + 0.5) * factor - 0.5 exact, then edge-replicates to ``size``
    (VGG's floor pooling makes coarse maps up to factor-1 pixels short)."""
    if factor != 1:
        x = F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False,
                          recompute_scale_factor=False)
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"tap of shape {tuple(x.shape)} upsampled beyond target size {size}")
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def hypercolumn_from_taps(taps: list[torch.Tensor]) -> torch.Tensor:
    """Five taps at strides (4, 8, 8, 16, 16) -> hypercolumn [B, 2048, h4, w4] float32, unit norm.

    Each tap is upsampled bilinearly to the stride-4 map (size of the relu3_2 tap) so that
    every channel obeys ``geometry.pixels.image_to_feature(uv, 4)``, then all are concatenated
    and L2-normalised per pixel in float32. (S2DHM used ``align_corners=True``, which shifts
    coarse channels by up to a few pixels; this is the geometrically consistent variant.)
    """
    size = tuple(taps[0].shape[-2:])
    columns = [upsample_aligned(tap.float(), stride // HYPERCOLUMN_STRIDE, size)
               for tap, stride in zip(taps, TAP_STRIDES)]
    return F.normalize(torch.cat(columns, dim=1), p=2, dim=1)


class S2DHMNetwork(nn.Module):
    """VGG-16 encoder + NetVLAD(64, 512).

    Construction is deterministic and leaves the global RNG untouched: parameters are drawn
    under ``torch.manual_seed(seed)`` inside a forked RNG, with torchvision's VGG init for the
    convolutions (kaiming-normal fan-out, zero bias) and :meth:`NetVLAD.reset_parameters`.
    Checkpoint loading (``checkpoints.load_network``) overwrites them.

    Gradients are not disabled here; wrap inference in ``torch.inference_mode()``.
    """

    def __init__(self, num_clusters: int = 64, netvlad_bias: bool = False, seed: int = 0,
                 autocast_bf16: bool = False):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = build_encoder()
            self.netvlad = NetVLAD(num_clusters, ENCODER_DIM, bias=netvlad_bias)
            for module in self.encoder:
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.constant_(module.bias, 0)
            self.netvlad.reset_parameters()
        self.autocast_bf16 = autocast_bf16

    def _autocast(self, images: torch.Tensor, autocast_bf16: bool | None):
        enabled = self.autocast_bf16 if autocast_bf16 is None else autocast_bf16
        if enabled and images.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _encode(self, images: torch.Tensor, with_conv5_3: bool, autocast_bf16: bool | None
                ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """One encoder pass: the 5 taps (inputs of HYPERCOLUMN_LAYERS), conv5_3 (or None) and
        the detail tap (input of DETAIL_LAYER; None when the pass stops before it)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, H, W], got {tuple(images.shape)}")
        last = NUM_ENCODER_LAYERS if with_conv5_3 else HYPERCOLUMN_LAYERS[-1]
        taps = []
        detail = None
        x = images
        with self._autocast(images, autocast_bf16):
            for index in range(last):
                if index in HYPERCOLUMN_LAYERS:
                    taps.append(x)
                if index == DETAIL_LAYER:
                    detail = x
                x = self.encoder[index](x)
            if last == HYPERCOLUMN_LAYERS[-1]:
                taps.append(x)
        return taps, (x if with_conv5_3 else None), detail

    def taps(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> list[torch.Tensor]:
        """images [B, 3, H, W] -> 5 tensors at native strides (4, 8, 8, 16, 16) with
        (256, 256, 512, 512, 512) channels; stops before conv5_3 (for training)."""
        return self._encode(images, with_conv5_3=False, autocast_bf16=autocast_bf16)[0]

    def encode(self, images: torch.Tensor, autocast_bf16: bool | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The encoder pass of :meth:`forward`: images [B, 3, H, W] -> (5 taps at TAP_STRIDES
        with TAP_CHANNELS, conv5_3 [B, 512, H//16, W//16], relu2_2 [B, 128, H//2, W//2]), raw
        activations in the pass's dtype. ``backbone_variants`` replace this pass only."""
        taps, conv5_3, relu2_2 = self._encode(images, with_conv5_3=True, autocast_bf16=autocast_bf16)
        return taps, conv5_3, relu2_2

    def forward(self, images: torch.Tensor, autocast_bf16: bool | None = None,
                detail: bool = True, hypercolumn: bool = True) -> NetworkOutput:
        """images [B, 3, H, W] ImageNet-normalised -> :class:`NetworkOutput` (one encoder pass);
        ``detail`` False skips normalising the detail tap (a map without that level);
        ``hypercolumn`` False returns the taps instead of assembling the hypercolumn."""
        return self.head(*self.encode(images, autocast_bf16), detail=detail, hypercolumn=hypercolumn)

    def head(self, taps: list[torch.Tensor], conv5_3: torch.Tensor, relu2_2: torch.Tensor,
             detail: bool = True, hypercolumn: bool = True) -> NetworkOutput:
        """The rest of :meth:`forward`: the outputs of :meth:`encode` -> :class:`NetworkOutput`
        (hypercolumn, NetVLAD and detail computed in float32, taps passed as given); ``detail``
        and ``hypercolumn`` as in :meth:`forward`."""
        return NetworkOutput(hypercolumn=hypercolumn_from_taps(taps) if hypercolumn else None,
                             taps=None if hypercolumn else taps,
                             global_descriptor=self.netvlad(conv5_3.float()),
                             detail=F.normalize(relu2_2.float(), p=2, dim=1) if detail else None)

    def hypercolumn(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> torch.Tensor:
        """images [B, 3, H, W] -> [B, 2048, H//4, W//4] float32, unit norm per pixel."""
        return hypercolumn_from_taps(self.taps(images, autocast_bf16))

    def global_descriptor(self, images: torch.Tensor,
                          autocast_bf16: bool | None = None) -> torch.Tensor:
        """images [B, 3, H, W] -> [B, K*512] float32, unit norm."""
        with self._autocast(images, autocast_bf16):
            conv5_3 = self.encoder(images)
        return self.netvlad(conv5_3.float())
