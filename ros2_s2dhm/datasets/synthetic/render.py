"""Rendering of a synthetic view: ray casting (:mod:`.raycast`) then lighting and weather (:mod:`.conditions`)."""
from __future__ import annotations

import numpy as np

from ...geometry.camera import Camera
from ...geometry.pose import Pose
from .conditions import Condition, apply_condition, get_condition
from .raycast import trace
from .scene import Scene


def render_view(scene: Scene, pose: Pose, camera: Camera, condition: str | Condition = "overcast-reference",
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` seen by ``camera`` at ``pose`` (world-to-camera) under ``condition``.

    ``condition`` is a name of :data:`~.conditions.CONDITIONS` or a :class:`~.conditions.Condition`;
    ``rng`` drives the per-image randomness (sensor noise, rain streaks, snowflakes), default seed 0.
    Returns ``(image [H, W, 3] uint8 RGB, depth [H, W] float64 camera z in metres, inf for sky)``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    hits = trace(scene, pose, camera)
    image = apply_condition(scene, hits, pose, camera, get_condition(condition), rng)
    return image, hits.depth
