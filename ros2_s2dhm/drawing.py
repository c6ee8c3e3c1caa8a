"""Pictures of a localization for people: the inlier matches over the query image."""
from __future__ import annotations

import numpy as np


def draw_matches(image: np.ndarray, result, camera) -> np.ndarray:
    """Query image [H, W, 3] RGB with the inlier keypoints (green) and the reprojection of their
    3D points through the estimated pose (red), joined by a line; a copy."""
    import cv2  # noqa: PLC0415

    canvas = image.copy()
    keypoints = np.asarray(result.inlier_keypoints, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(result.inlier_points3d, dtype=np.float64).reshape(-1, 3)
    projected = None
    if result.pose is not None and len(points):
        projected, valid = camera.project_np(result.pose.transform(points), check_bounds=False)
        projected = np.where(valid[:, None], projected, np.nan)
    for i, (u, v) in enumerate(keypoints):
        cv2.circle(canvas, (int(round(u)), int(round(v))), 3, (0, 255, 0), 1, cv2.LINE_AA)
        if projected is not None and np.all(np.isfinite(projected[i])):
            end = (int(round(projected[i, 0])), int(round(projected[i, 1])))
            cv2.line(canvas, (int(round(u)), int(round(v))), end, (255, 0, 0), 1, cv2.LINE_AA)
    return canvas
