"""Vectorised ray casting against the quads of a :class:`~.scene.Scene`.

:func:`trace` shoots one ray per pixel centre (OpenCV convention: pixel (u, v) is the ray through
``K^-1 [u, v, 1]``), keeps the nearest quad intersection and looks up its texture with trilinear
(mip-mapped bilinear) sampling.
Depth is the camera-frame z of the hit point (``np.inf`` where the ray hits nothing), so that
``depth * K^-1 [u, v, 1]`` is the exact 3D point seen at pixel (u, v).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...geometry.camera import Camera
from ...geometry.pixels import scale_pixels
from ...geometry.pose import Pose
from .scene import Quad, Scene

_REMAP_COLS = 512  # cv2.remap maps are reshaped to this width (maps must stay < 32767 rows)


@dataclass
class Hits:
    """Per-pixel result of :func:`trace` for an image of ``height`` x ``width`` pixels.

    ``depth`` [H, W] float64 (inf = sky), ``quad`` [H, W] int (-1 = sky), ``points`` [H, W, 3]
    world hit points, ``normals`` [H, W, 3] world normals, ``texture`` [H, W, 5] sampled texture,
    ``rays`` [H, W, 3] unit world ray directions, ``distance`` [H, W] ray length to the hit.
    """

    depth: np.ndarray
    quad: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    texture: np.ndarray
    rays: np.ndarray
    distance: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.quad >= 0


def pixel_rays(camera: Camera) -> np.ndarray:
    """Camera-frame rays [H, W, 3] (z = 1) through every pixel centre, undistorted."""
    u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
    uv = np.stack([u, v], axis=-1).reshape(-1, 2)
    if camera.has_distortion:
        rays = camera.unproject_np(uv)
    else:
        fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
        rays = np.stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(len(uv))], axis=-1)
    return rays.reshape(camera.height, camera.width, 3)


def _hit_quad(quad: Quad, qi: int, origins: np.ndarray, dirs: np.ndarray, idx: np.ndarray, t_min: float,
              any_hit: bool, best: tuple) -> None:
    """Update ``best = (t, quad, a, b)`` (N,) arrays in place with the hits of rays ``idx`` on one quad."""
    best_t, best_q, best_a, best_b = best
    denom = dirs[idx] @ quad.normal
    num = (quad.origin - origins[idx]) @ quad.normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / denom
    ok = (t > t_min) & (t < best_t[idx])
    if any_hit:
        ok &= best_q[idx] < 0
    idx, t = idx[ok], t[ok]
    if idx.size == 0:
        return
    rel = origins[idx] + t[:, None] * dirs[idx] - quad.origin
    a = rel @ quad.edge_u / (quad.edge_u @ quad.edge_u)
    b = rel @ quad.edge_v / (quad.edge_v @ quad.edge_v)
    inside = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
    idx = idx[inside]
    best_t[idx], best_q[idx] = t[inside], qi
    best_a[idx], best_b[idx] = a[inside], b[inside]


def intersect(quads: list[Quad], origins: np.ndarray, dirs: np.ndarray, t_min: float = 1e-6,
              t_max: np.ndarray | float = np.inf, any_hit: bool = False, candidates=None):
    """Nearest intersection of rays ``origins + t * dirs`` (origins (3,) or (N, 3), dirs (N, 3)).

    Returns ``(t (N,), quad_index (N,) int, a (N,), b (N,))`` with quad_index = -1 and t = t_max
    where no quad lies in (t_min, t_max). With ``any_hit`` only ``quad_index >= 0`` is meaningful.
    ``candidates(quad) -> index array | None`` may restrict the rays tested against a quad
    (None: skip the quad).
    """
    n = len(dirs)
    origins = np.broadcast_to(np.asarray(origins, np.float64), (n, 3))
    best = (np.broadcast_to(np.asarray(t_max, np.float64), (n,)).copy(), np.full(n, -1, np.int64),
            np.zeros(n), np.zeros(n))
    everything = np.arange(n)
    for qi, quad in enumerate(quads):
        idx = everything if candidates is None else candidates(quad)
        if idx is not None and idx.size:
            _hit_quad(quad, qi, origins, dirs, idx, t_min, any_hit, best)
    return best


def _frustum_candidates(pose: Pose, camera: Camera):
    """Per-quad pixel candidates of primary rays: skip quads behind the camera or facing away,
    restrict quads fully in front of the camera to the bounding box of their projection."""
    width, height = camera.width, camera.height
    everything = np.arange(width * height)
    center = pose.center

    def candidates(quad: Quad):
        if (center - quad.origin) @ quad.normal <= 0:  # back face: occluded by a front face
            return None
        corners = quad.origin + np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) @ np.stack([quad.edge_u, quad.edge_v])
        p_cam = pose.transform(corners)
        if np.all(p_cam[:, 2] <= 1e-6):
            return None
        if np.any(p_cam[:, 2] <= 1e-3) or camera.has_distortion:
            return everything
        uv = p_cam[:, :2] / p_cam[:, 2:] * np.diag(camera.K)[:2] + camera.K[:2, 2]
        u0, v0 = np.maximum(np.floor(uv.min(axis=0)).astype(int) - 1, 0)
        u1, v1 = np.minimum(np.ceil(uv.max(axis=0)).astype(int) + 1, [width - 1, height - 1])
        if u0 > u1 or v0 > v1:
            return None
        return (np.arange(v0, v1 + 1)[:, None] * width + np.arange(u0, u1 + 1)[None, :]).ravel()

    return candidates


def lookup(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``image`` [h, w(, C)] float32 at pixel coordinates ``xy`` (N, 2) -> (N, C)."""
    n = len(xy)
    rows = max(1, -(-n // _REMAP_COLS))
    maps = np.zeros((rows * _REMAP_COLS, 2), np.float32)
    maps[:n] = xy
    maps = maps.reshape(rows, _REMAP_COLS, 2)
    out = cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(rows * _REMAP_COLS, -1)[:n]


def sample_texture(quad: Quad, a: np.ndarray, b: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Texture of ``quad`` at (a, b) (N,) with trilinear mip filtering for a pixel footprint (N,) in metres."""
    h0, w0 = quad.texture.shape[:2]
    xy0 = np.stack([a * w0 - 0.5, (1.0 - b) * h0 - 0.5], axis=-1)
    level = np.clip(np.log2(np.maximum(footprint / quad.texel_size, 1.0)), 0, len(quad.mips) - 1)
    lower = np.floor(level).astype(np.int64)
    frac = (level - lower)[:, None].astype(np.float32)
    out = np.zeros((len(a), quad.texture.shape[2]), np.float32)
    for lev in np.unique(lower):
        sel = np.flatnonzero(lower == lev)
        values = []
        for k in (lev, min(lev + 1, len(quad.mips) - 1)):
            mip = quad.mips[k]
            xy = scale_pixels(xy0[sel], 0.5 ** k)
            values.append(lookup(mip, xy))
        out[sel] = values[0] * (1 - frac[sel]) + values[1] * frac[sel]
    return out


def shade_lookup(scene: Scene, quad_index: np.ndarray, a: np.ndarray, b: np.ndarray,
                 footprint: np.ndarray) -> np.ndarray:
    """Texture values (N, 5) for hits given by quad index, (a, b) and footprint; zeros for misses."""
    out = np.zeros((len(quad_index), 5), np.float32)
    for qi in np.unique(quad_index[quad_index >= 0]):
        sel = np.flatnonzero(quad_index == qi)
        out[sel] = sample_texture(scene.quads[qi], a[sel], b[sel], footprint[sel])
    return out


def trace(scene: Scene, pose: Pose, camera: Camera) -> Hits:
    """Cast one ray per pixel of ``camera`` at ``pose`` (world-to-camera) and sample the textures."""
    rays_cam = pixel_rays(camera).reshape(-1, 3)
    dirs = rays_cam @ pose.R  # world directions (R^T d) with camera z = 1
    center = pose.center
    t, q, a, b = intersect(scene.quads, center, dirs, candidates=_frustum_candidates(pose, camera))
    norm = np.linalg.norm(dirs, axis=1)
    unit = dirs / norm[:, None]
    valid = q >= 0
    normals = np.zeros_like(dirs)
    points = np.full_like(dirs, np.nan)
    normals[valid] = np.stack([scene.quads[i].normal for i in range(len(scene.quads))])[q[valid]]
    points[valid] = center + t[valid, None] * dirs[valid]
    distance = np.where(valid, t * norm, np.inf)
    focal = np.sqrt(camera.K[0, 0] * camera.K[1, 1])
    cos = np.abs(np.sum(unit * normals, axis=1))
    footprint = np.where(valid, distance / focal / np.sqrt(np.maximum(cos, 0.05)), 0.0)
    texture = shade_lookup(scene, q, a, b, footprint)
    shape = (camera.height, camera.width)
    return Hits(depth=np.where(valid, t, np.inf).reshape(shape), quad=q.reshape(shape),
                points=points.reshape(shape + (3,)), normals=normals.reshape(shape + (3,)),
                texture=texture.reshape(shape + (5,)), rays=unit.reshape(shape + (3,)),
                distance=distance.reshape(shape))
