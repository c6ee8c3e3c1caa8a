"""Synthetic seasons: a textured street rendered by ray casting under RobotCar Seasons conditions.

``make_scene(seed)`` builds the street, ``render_view(scene, pose, camera, condition, rng)``
renders one image with its depth, ``generate_synthetic(out_dir, seed, size)`` writes a whole
dataset in the RobotCar Seasons layout (see :mod:`.generate`).
"""
from .conditions import CONDITIONS, Condition, get_condition
from .generate import (QUERY_CONDITIONS, REFERENCE_CONDITION, SIZES, SyntheticDataset, SyntheticSize,
                       SyntheticView, default_camera, generate_synthetic, pixel_correspondences,
                       query_traversal, reference_traversal, scene_of_condition, street_pose)
from .render import render_view
from .scene import Scene, make_scene

__all__ = [
    "CONDITIONS", "Condition", "get_condition", "QUERY_CONDITIONS", "REFERENCE_CONDITION", "SIZES",
    "SyntheticDataset", "SyntheticSize", "SyntheticView", "default_camera", "generate_synthetic",
    "pixel_correspondences", "query_traversal", "reference_traversal", "scene_of_condition", "street_pose",
    "render_view", "Scene", "make_scene",
]
