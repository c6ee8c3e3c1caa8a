"""Named exceptions of the library.

Every error a user can cause (bad file, bad image, bad camera, bad map) is one of
these, with a message naming the path and field and saying what was expected.
Callers (node, offline tools) catch :class:`S2DHMError` and report it.
"""


class S2DHMError(Exception):
    """Base class of all errors caused by bad input or bad files."""


class CameraError(S2DHMError, ValueError):
    """Invalid camera model, parameter count or non-finite intrinsics."""


class InputImageError(S2DHMError, ValueError):
    """An image array that cannot be processed (shape, dtype, empty, size mismatch)."""


class CheckpointError(S2DHMError, RuntimeError):
    """A weights file that is missing, of unknown format, or with wrong keys/shapes."""


class MapFormatError(S2DHMError, RuntimeError):
    """A reference map directory that is missing, of another version, or inconsistent."""


class DatasetError(S2DHMError, ValueError):
    """A dataset folder or file that does not follow the expected layout."""


class BagError(S2DHMError, ValueError):
    """A rosbag or sequence that cannot be converted or replayed."""
