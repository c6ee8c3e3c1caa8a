"""Geometry: camera models, SE(3) poses, rotations and pixel conventions."""

from .camera import CAMERA_MODELS, Camera
from .pose import Pose, TorchPose, pose_error

__all__ = ["Camera", "CAMERA_MODELS", "Pose", "TorchPose", "pose_error"]
