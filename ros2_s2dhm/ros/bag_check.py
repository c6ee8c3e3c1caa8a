"""Integrity of a rosbag2 before it is replayed.

mcap storage files carry CRCs (one per chunk over its uncompressed records, one over the data
section): every chunk is checked with the ``mcap`` library and each corrupt chunk is reported
with its message time range. sqlite3 storage files have no CRCs: SQLite's own
``PRAGMA integrity_check`` is what can be checked, and the report says so.
"""
from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ros2_s2dhm.errors import BagError


@dataclass
class BagCheck:
    """What was checked and what was found. problems: one line each (empty: intact)."""

    files: list[str] = field(default_factory=list)
    chunks: int = 0
    chunks_without_crc: int = 0  # written without CRCs: corruption there cannot be detected
    method: dict[str, str] = field(default_factory=dict)  # file -> how it was checked
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        how = "; ".join(f"{name}: {m}" for name, m in self.method.items())
        if self.chunks_without_crc:
            how += (f"; {self.chunks_without_crc} of {self.chunks} mcap chunk(s) were written "
                    f"without a CRC and cannot be checked")
        if self.ok:
            return f"bag intact ({how})"
        return f"bag CORRUPT, {len(self.problems)} problem(s) ({how}):\n  " + "\n  ".join(self.problems)


def storage_files(bag: str | Path) -> list[Path]:
    """The storage files a rosbag2 folder's metadata.yaml lists. Raises BagError."""
    import yaml  # noqa: PLC0415

    bag = Path(bag)
    metadata = bag / "metadata.yaml"
    if not metadata.is_file():
        raise BagError(f"not a rosbag2 folder (no metadata.yaml): {bag}")
    try:
        info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        paths = [bag / Path(name).name for name in info["relative_file_paths"]]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(f"{metadata}: no rosbag2_bagfile_information.relative_file_paths "
                       f"({type(exc).__name__}: {exc})") from exc
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BagError(f"bag {bag}: storage file(s) listed in metadata.yaml are missing: {missing}")
    return paths


MCAP_MAGIC = b"\x89MCAP0\r\n"
_CHUNK = 0x06


def add_chunk_crcs(path: str | Path) -> int:
    """Write the CRC of every uncompressed chunk of an mcap file in place; returns how many.

    rosbags writes chunk CRCs as 0 ("not computed"); ``ros2 bag record`` computes them. With
    them a bag written here can be checked like a recorded one. Compressed chunks are left
    as they are (their CRC covers the decompressed bytes).
    """
    import zlib  # noqa: PLC0415

    path = Path(path)
    done = 0
    with path.open("r+b") as f:
        if f.read(8) != MCAP_MAGIC:
            raise BagError(f"{path}: not an mcap file (bad magic)")
        while header := f.read(9):
            if len(header) < 9:
                break
            opcode, length = header[0], struct.unpack("<Q", header[1:])[0]
            start = f.tell()
            if opcode == _CHUNK:
                fixed = f.read(28)  # start, end, uncompressed size (u64 each), crc (u32)
                (name_len,) = struct.unpack("<I", f.read(4))
                compression = f.read(name_len)
                (records_len,) = struct.unpack("<Q", f.read(8))
                if not compression:
                    crc = zlib.crc32(f.read(records_len))
                    f.seek(start + 24)
                    f.write(struct.pack("<I", crc))
                    done += 1
                del fixed
            f.seek(start + length)
    return done


def _check_mcap(path: Path, report: BagCheck) -> None:
    from mcap.exceptions import McapError  # noqa: PLC0415
    from mcap.records import Chunk  # noqa: PLC0415
    from mcap.stream_reader import CRCValidationError, StreamReader, get_chunk_data_stream  # noqa: PLC0415

    report.method[path.name] = "mcap chunk and data-section CRCs"
    index = -1
    try:
        with path.open("rb") as stream:
            for record in StreamReader(stream, emit_chunks=True, validate_crcs=True).records:
                if not isinstance(record, Chunk):
                    continue
                index += 1
                report.chunks += 1
                if record.uncompressed_crc == 0:
                    report.chunks_without_crc += 1
                    continue
                try:
                    get_chunk_data_stream(record, validate_crc=True)
                except (CRCValidationError, McapError, ValueError) as exc:
                    report.problems.append(
                        f"{path.name}: chunk {index} (messages {record.message_start_time} .. "
                        f"{record.message_end_time} ns): {exc}")
    except CRCValidationError as exc:
        report.problems.append(f"{path.name}: data section: {exc}")
    except (McapError, ValueError, EOFError, struct.error, OSError) as exc:
        report.problems.append(f"{path.name}: unreadable after chunk {index}: "
                               f"{type(exc).__name__}: {exc}")


def _check_sqlite(path: Path, report: BagCheck) -> None:
    report.method[path.name] = "sqlite3 has no CRCs; PRAGMA integrity_check"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{path.name}: {exc}")
        return
    if rows != ["ok"]:
        report.problems += [f"{path.name}: {row}" for row in rows]


def check_bag(bag: str | Path) -> BagCheck:
    """Check every storage file of the rosbag2 folder ``bag``. Raises BagError when it is not
    one or a listed file is missing; corruption is reported in the result, not raised."""
    report = BagCheck()
    for path in storage_files(bag):
        report.files.append(path.name)
        if path.suffix == ".mcap":
            _check_mcap(path, report)
        elif path.suffix in (".db3", ".sqlite3"):
            _check_sqlite(path, report)
        else:
            report.method[path.name] = "unknown storage: not checked"
    return report
