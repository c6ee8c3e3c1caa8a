"""VGG-16 hypercolumns, NetVLAD global descriptors, PCA and checkpoint loading."""
from ros2_s2dhm.features.backbone import (
    HYPERCOLUMN_DIM,
    HYPERCOLUMN_LAYERS,
    HYPERCOLUMN_STRIDE,
    NetworkOutput,
    S2DHMNetwork,
    hypercolumn_from_taps,
)
from ros2_s2dhm.features.checkpoints import (
    CheckpointError,
    WeightsInfo,
    load_network,
    save_network,
    weights_hash,
)
from ros2_s2dhm.features.netvlad import NetVLAD
from ros2_s2dhm.features.pca import PCA
from ros2_s2dhm.features.preprocess import InputImageError, prepare_image

__all__ = [
    "HYPERCOLUMN_DIM", "HYPERCOLUMN_LAYERS", "HYPERCOLUMN_STRIDE", "NetworkOutput", "S2DHMNetwork",
    "hypercolumn_from_taps", "CheckpointError", "WeightsInfo", "load_network", "save_network",
    "weights_hash", "PCA", "NetVLAD", "InputImageError", "prepare_image",
]
