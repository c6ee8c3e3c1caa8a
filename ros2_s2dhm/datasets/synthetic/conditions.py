"""Lighting, weather and sensor effects of the RobotCar-Seasons-like conditions.

A :class:`Condition` is a set of physical knobs: sky light, sun with geometric cast shadows,
street lamps with distance falloff, a headlight cone, lit windows, wet ground with mirror
reflections, snow cover on upward-facing surfaces and ledges, rain streaks, snowflakes, haze,
blur, sensor noise and gain. Scene-bound effects (snow cover, puddles) are functions of the world
position so that a condition looks the same from every viewpoint; per-image effects (noise,
streaks, flakes) are drawn from the ``rng`` passed to :func:`apply_condition`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...errors import DatasetError
from ...geometry.camera import Camera
from ...geometry.pose import Pose
from . import textures
from .raycast import Hits, intersect, lookup, shade_lookup
from .scene import Scene


@dataclass(frozen=True)
class Condition:
    """Appearance parameters of one condition (colours are RGB in [0, 1])."""

    name: str
    ambient: float = 1.0                      # diffuse sky light
    sky_top: tuple = (0.72, 0.76, 0.82)
    sky_horizon: tuple = (0.88, 0.89, 0.9)
    tint: tuple = (1.0, 1.0, 1.0)
    sun: float = 0.0                          # directional light with cast shadows
    sun_color: tuple = (1.0, 0.95, 0.85)
    sun_elevation_deg: float = 40.0
    sun_azimuth_deg: float = 25.0             # from +x towards +y
    lamps: float = 0.0                        # street lamp gain
    headlight: float = 0.0
    windows: float = 0.0                      # emission of lit windows and shop fronts
    wet: float = 0.0                          # darker ground, puddles with reflections
    snow: float = 0.0                         # snow cover on ground, tops and ledges
    rain_streaks: float = 0.0                 # streaks per 1000 pixels
    snowflakes: float = 0.0                   # flakes per 1000 pixels
    haze: float = 0.0                         # extinction per metre
    haze_color: tuple = (0.8, 0.8, 0.82)
    saturation: float = 1.0
    contrast: float = 1.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.006                # read noise (before gain)
    gain: float = 1.0
    vignetting: float = 0.2
    exposure_jitter: float = 0.06             # per-image log-normal exposure variation (auto exposure)
    motion_blur_px: float = 0.0               # length of a horizontal motion-blur kernel (long exposures)


_NIGHT = dict(ambient=0.02, sky_top=(0.01, 0.012, 0.03), sky_horizon=(0.04, 0.035, 0.05),
              lamps=0.5, headlight=0.8, windows=0.6, noise_sigma=0.012, gain=1.7, saturation=0.85,
              motion_blur_px=3.0)

CONDITIONS: dict[str, Condition] = {c.name: c for c in [
    Condition("overcast-reference"),
    Condition("overcast-summer", ambient=1.05, tint=(1.0, 1.02, 0.94), haze=0.004, sky_top=(0.75, 0.8, 0.86)),
    Condition("overcast-winter", ambient=0.85, tint=(0.94, 0.97, 1.05), contrast=0.9, saturation=0.8,
              haze=0.01, sky_top=(0.78, 0.8, 0.84)),
    Condition("sun", ambient=0.5, sun=0.85, sky_top=(0.35, 0.55, 0.92), sky_horizon=(0.7, 0.8, 0.95),
              contrast=1.15, saturation=1.15),
    Condition("dawn", ambient=0.45, tint=(0.92, 0.86, 1.0), sun=0.25, sun_color=(1.0, 0.7, 0.55),
              sun_elevation_deg=8.0, sun_azimuth_deg=-60.0, sky_top=(0.35, 0.4, 0.6),
              sky_horizon=(0.95, 0.7, 0.6), lamps=0.3, windows=0.3, noise_sigma=0.01),
    Condition("dusk", ambient=0.45, tint=(1.0, 0.72, 0.5), sky_top=(0.2, 0.2, 0.4), sky_horizon=(0.95, 0.55, 0.3),
              lamps=0.45, windows=0.5, noise_sigma=0.012, saturation=0.9),
    Condition("rain", ambient=0.6, tint=(0.9, 0.93, 1.0), wet=1.0, rain_streaks=4.0, haze=0.012,
              haze_color=(0.55, 0.57, 0.6), sky_top=(0.45, 0.47, 0.5), sky_horizon=(0.6, 0.62, 0.64),
              saturation=0.7, blur_sigma=0.8, noise_sigma=0.01),
    Condition("snow", ambient=0.9, snow=1.0, snowflakes=6.0, haze=0.025, haze_color=(0.85, 0.86, 0.88),
              sky_top=(0.82, 0.83, 0.85), sky_horizon=(0.9, 0.9, 0.91), contrast=0.7, saturation=0.7),
    Condition("night", **_NIGHT),
    Condition("night-rain", wet=1.0, rain_streaks=3.0, blur_sigma=0.9, haze=0.01,
              haze_color=(0.05, 0.05, 0.06), **_NIGHT),
]}
"""The conditions of RobotCar Seasons, keyed by their folder name."""


def get_condition(condition: str | Condition) -> Condition:
    """A :class:`Condition` from its name (or itself); raises DatasetError for unknown names."""
    if isinstance(condition, Condition):
        return condition
    if condition not in CONDITIONS:
        raise DatasetError(f"unknown synthetic condition '{condition}'; use one of {sorted(CONDITIONS)}")
    return CONDITIONS[condition]


def _ground_field(scene: Scene, name: str, resolution: float = 0.1) -> np.ndarray:
    """A smooth random field [H, W] in [0, 1] over the ground (x, y), fixed per scene and name."""
    cache = scene.fields
    if name not in cache:
        seed = [scene.seed, sum(map(ord, name))]
        rng = np.random.default_rng(seed)
        h = int(2 * scene.street_half_width / resolution) + 1
        w = int((scene.length + 24.0) / resolution) + 1
        cache[name] = textures.value_noise(rng, h, w, cell_sizes=(40, 12, 3), weights=(1.0, 0.6, 0.3))
    return cache[name]


def _sample_field(scene: Scene, field: np.ndarray, points: np.ndarray, resolution: float = 0.1) -> np.ndarray:
    """Field value at world points (N, 3) (by x, y)."""
    xs = (points[:, 0] + 12.0) / resolution
    ys = (points[:, 1] + scene.street_half_width) / resolution
    xy = np.stack([np.clip(xs, 0, field.shape[1] - 1), np.clip(ys, 0, field.shape[0] - 1)], axis=-1)
    return lookup(field, xy)[:, 0]


def sun_direction(condition: Condition) -> np.ndarray:
    """Unit vector (3,) pointing from the scene towards the sun."""
    el, az = np.radians(condition.sun_elevation_deg), np.radians(condition.sun_azimuth_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def _snow_cover(scene: Scene, points: np.ndarray, normals: np.ndarray, ledge: np.ndarray) -> np.ndarray:
    """Snow coverage in [0, 1] (N,): upward surfaces (minus tyre tracks on the road) and ledges."""
    field = _sample_field(scene, _ground_field(scene, "snow"), points)
    up = np.clip((normals[:, 2] - 0.6) / 0.3, 0, 1)
    cover = np.clip(0.55 + 1.2 * (field - 0.45), 0, 1)
    on_road = np.abs(points[:, 1]) < scene.road_half_width
    tracks = np.zeros(len(points))
    for lane in (-scene.road_half_width / 2, scene.road_half_width / 2):
        for wheel in (-0.8, 0.8):
            tracks = np.maximum(tracks, np.exp(-((points[:, 1] - lane - wheel) / 0.25) ** 2))
    cover = np.where(on_road & (normals[:, 2] > 0.9), cover * (1 - 0.75 * tracks), cover)
    return np.clip(np.maximum(up * cover, ledge * 0.9), 0, 1)


def _lighting(scene: Scene, points: np.ndarray, normals: np.ndarray, pose: Pose,
              c: Condition, direct_sun: bool = True) -> np.ndarray:
    """Irradiance (N, 3) at world points with normals (N, 3)."""
    sky = c.ambient * (0.65 + 0.35 * np.clip(normals[:, 2], 0, 1))
    light = sky[:, None] * np.ones(3)
    if c.sun > 0:
        s = sun_direction(c)
        facing = np.clip(normals @ s, 0, None)
        lit = facing > 0
        if direct_sun and lit.any():
            idx = np.flatnonzero(lit)
            _, q, _, _ = intersect(scene.quads, points[idx] + 1e-4 * normals[idx],
                                   np.broadcast_to(s, (len(idx), 3)), t_min=1e-4, any_hit=True)
            facing[idx[q >= 0]] = 0.0
        light += c.sun * facing[:, None] * np.asarray(c.sun_color)
    if c.lamps > 0:
        for lamp in scene.lamps:
            d = lamp.position - points
            dist2 = np.sum(d * d, axis=1)
            cos = np.clip(np.sum(d * normals, axis=1) / np.sqrt(dist2), 0, None)
            light += c.lamps * lamp.intensity * (cos / (dist2 + 1.0))[:, None] * lamp.color * 0.08
    if c.headlight > 0:
        source = pose.center + pose.R.T @ np.array([0.0, 0.4, 0.0])  # slightly below the camera
        axis = pose.R[2]
        d = points - source
        dist = np.linalg.norm(d, axis=1) + 1e-9
        cos_axis = (d @ axis) / dist
        cone = np.clip((cos_axis - np.cos(np.radians(35))) / (1 - np.cos(np.radians(35))), 0, 1) ** 0.7
        cos = np.clip(-np.sum(d * normals, axis=1) / dist, 0, None)
        light += c.headlight * 12.0 * (cone * cos / (dist ** 2 + 2.0))[:, None] * np.array([1.0, 0.97, 0.9])
    return light


def _surface_color(scene: Scene, points: np.ndarray, normals: np.ndarray, texture: np.ndarray,
                   pose: Pose, c: Condition, direct_sun: bool = True) -> np.ndarray:
    """Outgoing colour (N, 3) of surface points with sampled textures (N, 5)."""
    albedo = texture[:, :3].astype(np.float64)
    if c.snow > 0:
        cover = c.snow * _snow_cover(scene, points, normals, texture[:, textures.LEDGE])
        albedo = albedo * (1 - cover[:, None]) + cover[:, None] * np.array([0.93, 0.94, 0.97])
    if c.wet > 0:
        ground = normals[:, 2] > 0.9
        albedo[ground] *= 1 - 0.35 * c.wet
    color = albedo * _lighting(scene, points, normals, pose, c, direct_sun)
    if c.windows > 0:
        color += c.windows * texture[:, textures.EMISSION, None] * np.array([1.0, 0.8, 0.5]) * 0.8
    return color


def _sky(rays: np.ndarray, c: Condition) -> np.ndarray:
    """Sky colour (N, 3) for unit world rays."""
    up = np.clip(rays[:, 2], 0, 1)[:, None] ** 0.6
    return (1 - up) * np.asarray(c.sky_horizon) + up * np.asarray(c.sky_top)


def _reflections(scene: Scene, hits: Hits, sel: np.ndarray, pose: Pose, c: Condition) -> np.ndarray:
    """Colour (len(sel), 3) seen in the mirror direction of ground pixels ``sel`` (flat indices)."""
    rays = hits.rays.reshape(-1, 3)[sel]
    points = hits.points.reshape(-1, 3)[sel]
    mirrored = rays * np.array([1.0, 1.0, -1.0])
    t, q, a, b = intersect(scene.quads, points + 1e-4 * np.array([0, 0, 1.0]), mirrored, t_min=1e-3)
    out = _sky(mirrored, c)
    hit = q >= 0
    if hit.any():
        footprint = 0.05 + 0.05 * t[hit]  # blurry reflections
        tex = shade_lookup(scene, q[hit], a[hit], b[hit], footprint)
        normals = np.stack([quad.normal for quad in scene.quads])[q[hit]]
        pts = points[hit] + t[hit, None] * mirrored[hit]
        out[hit] = _surface_color(scene, pts, normals, tex, pose, c, direct_sun=False)
    return out


def _lamp_glow(scene: Scene, hits: Hits, pose: Pose, camera: Camera, c: Condition) -> np.ndarray:
    """Additive halos [H, W, 3] of the visible street lamps."""
    glow = np.zeros((camera.height, camera.width, 3))
    if not scene.lamps:
        return glow
    positions = np.stack([lamp.position for lamp in scene.lamps])
    p_cam = pose.transform(positions)
    uv, valid = camera.project_np(p_cam, check_bounds=True)
    focal = camera.K[0, 0]
    yy, xx = np.mgrid[0:camera.height, 0:camera.width]
    for i in np.flatnonzero(valid):
        u, v = uv[i]
        z = p_cam[i, 2]
        if hits.depth[int(round(v)), int(round(u))] < z - 0.3:  # occluded
            continue
        radius = max(1.0, 0.35 * focal / z)
        r2 = ((xx - u) ** 2 + (yy - v) ** 2) / radius ** 2
        glow += (c.lamps * 1.5 * np.exp(-r2) + c.lamps * 0.15 * np.exp(-r2 / 16))[..., None] \
            * scene.lamps[i].color
    return glow


def apply_condition(scene: Scene, hits: Hits, pose: Pose, camera: Camera, c: Condition,
                    rng: np.random.Generator) -> np.ndarray:
    """Turn traced surfaces into an RGB uint8 image [H, W, 3] under condition ``c``."""
    h, w = camera.height, camera.width
    valid = hits.valid.reshape(-1)
    rays = hits.rays.reshape(-1, 3)
    image = _sky(rays, c)
    idx = np.flatnonzero(valid)
    points, normals = hits.points.reshape(-1, 3)[idx], hits.normals.reshape(-1, 3)[idx]
    color = _surface_color(scene, points, normals, hits.texture.reshape(-1, 5)[idx], pose, c)
    if c.wet > 0:
        ground = normals[:, 2] > 0.9
        puddles = np.clip((_sample_field(scene, _ground_field(scene, "puddles"), points) - 0.4) * 4, 0, 1)
        fresnel = 0.08 + 0.5 * (1 - np.clip(-rays[idx, 2], 0, 1)) ** 5
        weight = c.wet * np.where(ground, np.clip(fresnel + 0.6 * puddles, 0, 0.85), 0.0)
        sel = np.flatnonzero(weight > 0.02)
        if sel.size:
            reflected = _reflections(scene, hits, idx[sel], pose, c)
            color[sel] = color[sel] * (1 - weight[sel, None]) + weight[sel, None] * reflected
    if c.haze > 0:
        transmit = np.exp(-c.haze * hits.distance.reshape(-1)[idx])[:, None]
        color = color * transmit + (1 - transmit) * np.asarray(c.haze_color)
    image[idx] = color
    image = image.reshape(h, w, 3) * np.asarray(c.tint)
    if c.lamps > 0:
        image += _lamp_glow(scene, hits, pose, camera, c)
    gray = image.mean(axis=2, keepdims=True)
    image = gray + c.saturation * (image - gray)
    image = (image - 0.45) * c.contrast + 0.45
    if c.snowflakes > 0:
        image = _draw_particles(image, rng, int(c.snowflakes * h * w / 1000), snow=True)
    if c.rain_streaks > 0:
        image = _draw_particles(image, rng, int(c.rain_streaks * h * w / 1000), snow=False)
    if c.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), c.blur_sigma)
    if c.motion_blur_px >= 2:
        length = int(round(c.motion_blur_px * w / 320))
        if length >= 2:
            image = cv2.blur(image, (length, 1))
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    image = image * (1 - c.vignetting * r2)[..., None]
    # sensor: shot + read noise, then gain
    signal = np.clip(image, 0, None)
    noise = rng.normal(0, 1, image.shape) * np.sqrt(c.noise_sigma ** 2 + 0.0004 * signal)
    image = (image + noise) * c.gain * np.exp(c.exposure_jitter * rng.standard_normal())
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw_particles(image: np.ndarray, rng: np.random.Generator, count: int, snow: bool) -> np.ndarray:
    """Add snowflakes (bright discs) or rain streaks (slanted bright lines) in front of the scene."""
    h, w = image.shape[:2]
    layer = np.zeros((h, w), np.float32)
    scale = w / 320.0
    slant = rng.uniform(-0.25, 0.25)
    for _ in range(count):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if snow:
            radius = max(1, int(round(rng.uniform(0.3, 2.0) * scale)))
            cv2.circle(layer, (int(x), int(y)), radius, float(rng.uniform(0.4, 1.0)), -1, lineType=cv2.LINE_AA)
        else:
            length = rng.uniform(6, 20) * scale
            cv2.line(layer, (int(x), int(y)), (int(x + slant * length), int(y + length)),
                     float(rng.uniform(0.1, 0.3)), 1, lineType=cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.7)[..., None]
    target = np.array([0.95, 0.95, 0.97]) if snow else np.array([0.8, 0.82, 0.85])
    return image * (1 - layer) + layer * target
