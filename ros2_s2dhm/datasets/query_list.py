"""hloc query lists: one image per line, ``name MODEL WIDTH HEIGHT params...`` (COLMAP conventions)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import CameraError, DatasetError
from ..geometry.camera import CAMERA_MODELS, Camera

__all__ = ["read_query_list", "write_query_list"]


def read_query_list(path: str | Path) -> list[tuple[str, Camera]]:
    """Read ``(name, Camera)`` pairs; params are COLMAP-convention (converted by ``Camera.from_colmap``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: query list not found")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        if len(tokens) < 4:
            raise DatasetError(f"{where}: expected 'name MODEL WIDTH HEIGHT params...', got {line.strip()!r}")
        name, model = tokens[0], tokens[1].upper()
        if model not in CAMERA_MODELS:
            raise DatasetError(f"{where}: field 'MODEL': unknown camera model {tokens[1]!r} "
                               f"(use one of {sorted(CAMERA_MODELS)})")
        try:
            width, height = int(tokens[2]), int(tokens[3])
        except ValueError:
            raise DatasetError(f"{where}: fields 'WIDTH HEIGHT' must be integers, got {tokens[2:4]}") from None
        try:
            params = [float(v) for v in tokens[4:]]
        except ValueError:
            raise DatasetError(f"{where}: field 'params': non-numeric value in {tokens[4:]}") from None
        try:
            camera = Camera.from_colmap(model, width, height, params)
        except CameraError as error:
            raise DatasetError(f"{where}: {error}") from None
        entries.append((name, camera))
    return entries


def write_query_list(path: str | Path, entries: Iterable[tuple[str, Camera]]) -> Path:
    """Write ``(name, Camera)`` pairs in hloc's format (COLMAP-convention params, full precision)."""
    path = Path(path)
    lines = []
    for name, camera in entries:
        if any(c.isspace() for c in name):
            raise DatasetError(f"{path}: image name {name!r} contains whitespace")
        model, width, height, params = camera.to_colmap()
        lines.append(" ".join([name, model, str(width), str(height)] + [repr(float(p)) for p in params]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path
