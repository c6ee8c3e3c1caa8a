"""rosbag2 writing and reading through the ``rosbags`` library (no rclpy needed).

Writing: an image sequence becomes ``sensor_msgs/msg/CompressedImage`` (the JPEG/PNG
file bytes unchanged) or ``sensor_msgs/msg/Image`` messages, one
``sensor_msgs/msg/CameraInfo`` per image (``plumb_bob``; K, R = I, P = [K | 0]) and one
``tf2_msgs/msg/TFMessage`` on ``/tf_static`` (offered transient-local, as ``ros2 bag
record`` stores a latched topic) with the base -> camera (optical) frame transform.
Header stamps and bag times come from the µs timestamps in the file names.

Sources:

* RobotCar Seasons layout: ``<root>/images/<condition>/<camera>/<timestamp_us>.jpg`` and
  ``<root>/intrinsics/<camera>_intrinsics.txt`` (lines ``fx v``, ``fy v``, ``cx v``, ``cy v``);
* any folder of ``<timestamp_us>.jpg|.jpeg|.png`` images;
* a raw Oxford RobotCar sequence (:class:`~ros2_s2dhm.datasets.robotcar_raw.RawSequence`):
  demosaiced and optionally undistorted images, as ``Image`` (rgb8/bgr8) or re-encoded
  ``CompressedImage`` (jpeg/png).

Bags: storage ``mcap`` or ``sqlite3``, rosbag2 metadata version 9 (Jazzy, Kilted) or 8
(offered QoS stored as a YAML string, the layout older releases such as Humble parse;
``rosbags`` writes no version below 8; with Humble prefer ``sqlite3``, its default plugin).
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ros2_s2dhm.datasets.base import image_size
from ros2_s2dhm.datasets.robotcar import camera_from_intrinsics, read_intrinsics
from ros2_s2dhm.datasets.robotcar_raw import TimedImage
from ros2_s2dhm.errors import BagError, DatasetError
from ros2_s2dhm.ros.bag_check import add_chunk_crcs
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.rotation import matrix_to_quat_wxyz, wxyz_to_xyzw

LOG = logging.getLogger(__name__)

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: Message definitions used per bag version (identical for the types written here).
TYPESTORES = {8: Stores.ROS2_HUMBLE, 9: Stores.ROS2_KILTED}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
RAW_ENCODINGS = ("rgb8", "bgr8")
COMPRESSED_ENCODINGS = ("jpeg", "png")

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

_ZERO = QosTime(0, 0)
#: Offered QoS of streamed topics (reliable: matches reliable and best-effort subscribers).
QOS_STREAM = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                 _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)
#: Offered QoS of ``/tf_static`` (latched).
QOS_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                  _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)


@dataclass(frozen=True)
class BagConfig:
    """Where and how messages are written.

    ``image_topic`` carries ``CompressedImage`` for jpeg/png sources and ``Image`` for
    rgb8/bgr8 (name it accordingly, e.g. ``/camera/image`` vs ``/camera/image/compressed``).
    ``frame_id`` is the optical frame of the camera (z forward, x right, y down).
    """

    storage: str = "mcap"
    version: int = 9
    image_topic: str = "/camera/image/compressed"
    camera_info_topic: str = "/camera/camera_info"
    tf_static_topic: str = "/tf_static"
    frame_id: str = "camera"
    base_frame: str = "base_link"
    jpeg_format: str = "jpeg"

    def __post_init__(self):
        if self.storage not in STORAGES:
            raise BagError(f"storage {self.storage!r} is not supported; use one of {', '.join(STORAGES)}")
        if self.version not in TYPESTORES:
            raise BagError(f"bag version {self.version} is not supported; use 9 (Jazzy/Kilted) or 8 (Humble)")
        for name in ("image_topic", "camera_info_topic", "tf_static_topic", "frame_id", "base_frame"):
            if not getattr(self, name):
                raise BagError(f"BagConfig.{name} must not be empty")


@dataclass(frozen=True)
class StaticTransform:
    """Pose ``T`` (4, 4) of ``child`` in ``parent`` (maps child points to parent)."""

    parent: str
    child: str
    T: np.ndarray


@dataclass
class BagSummary:
    """What was written: message counts per topic and the stamp range (ns)."""

    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None


def stamp_from_us(timestamp_us: int) -> int:
    """µs -> ns."""
    return int(timestamp_us) * 1000


# --------------------------------------------------------------------------- writing


class BagWriter:
    """Context manager over ``rosbags.rosbag2.Writer`` that builds the messages.

    Connections are added on the first message of a topic. On an exception inside the
    ``with`` block the bag is aborted and its folder (created here) removed.
    """

    def __init__(self, path: str | Path, config: BagConfig = BagConfig()):
        self.path = Path(path)
        self.config = config
        if self.path.exists():
            raise BagError(f"output bag {self.path} exists already; remove it or choose another path")
        self.typestore = get_typestore(TYPESTORES[config.version])
        self._writer = Writer(self.path, version=config.version, storage_plugin=STORAGES[config.storage])
        self._connections: dict[str, Connection] = {}
        self.summary = BagSummary(self.path)

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._writer.close()
            for storage in self.path.glob("*.mcap"):  # CRCs, as ros2 bag record writes them
                add_chunk_crcs(storage)
        else:
            self._writer.abort()
            shutil.rmtree(self.path, ignore_errors=True)

    # --- message builders -------------------------------------------------------------
    def _header(self, stamp_ns: int, frame_id: str):
        types = self.typestore.types
        stamp = types["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                     nanosec=int(stamp_ns % 1_000_000_000))
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _write(self, topic: str, msgtype: str, stamp_ns: int, message, qos: Qos = QOS_STREAM) -> None:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=[qos])
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already carries {conn.msgtype}, cannot write {msgtype}")
        self._writer.write(conn, int(stamp_ns), self.typestore.serialize_cdr(message, msgtype))
        summary = self.summary
        summary.counts[topic] = summary.counts.get(topic, 0) + 1
        summary.start_ns = int(stamp_ns) if summary.start_ns is None else min(summary.start_ns, int(stamp_ns))
        summary.end_ns = int(stamp_ns) if summary.end_ns is None else max(summary.end_ns, int(stamp_ns))

    def write_compressed_image(self, stamp_ns: int, data: bytes, fmt: str) -> None:
        """``CompressedImage`` with ``data`` unchanged; ``fmt`` e.g. ``jpeg``, ``png``."""
        msg = self.typestore.types[COMPRESSED_IMAGE](
            header=self._header(stamp_ns, self.config.frame_id), format=fmt,
            data=np.frombuffer(data, dtype=np.uint8))
        self._write(self.config.image_topic, COMPRESSED_IMAGE, stamp_ns, msg)

    def write_image(self, stamp_ns: int, rgb: np.ndarray, encoding: str = "rgb8") -> None:
        """``Image`` from an RGB (H, W, 3) uint8 array, stored as ``rgb8`` or ``bgr8``."""
        if encoding not in RAW_ENCODINGS:
            raise BagError(f"raw image encoding {encoding!r} is not supported; use one of {RAW_ENCODINGS}")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise BagError(f"expected an RGB (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
        pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
        height, width = rgb.shape[:2]
        msg = self.typestore.types[IMAGE](
            header=self._header(stamp_ns, self.config.frame_id), height=height, width=width,
            encoding=encoding, is_bigendian=0, step=3 * width,
            data=np.ascontiguousarray(pixels).reshape(-1))
        self._write(self.config.image_topic, IMAGE, stamp_ns, msg)

    def write_camera_info(self, stamp_ns: int, camera: Camera) -> None:
        """``CameraInfo`` of ``camera`` (``plumb_bob``, D = k1, k2, p1, p2, 0)."""
        types = self.typestore.types
        K = camera.K
        P = np.zeros((3, 4))
        P[:, :3] = K
        msg = types[CAMERA_INFO](
            header=self._header(stamp_ns, self.config.frame_id), height=camera.height, width=camera.width,
            distortion_model="plumb_bob", d=np.concatenate([camera.dist_coeffs, [0.0]]).astype(np.float64),
            k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1),
            binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False))
        self._write(self.config.camera_info_topic, CAMERA_INFO, stamp_ns, msg)

    def write_static_transforms(self, stamp_ns: int, transforms: Sequence[StaticTransform]) -> None:
        """One ``TFMessage`` with all ``transforms`` on the ``/tf_static`` topic (transient-local)."""
        types = self.typestore.types
        items = []
        for tf in transforms:
            T = np.asarray(tf.T, dtype=np.float64)
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                raise BagError(f"transform {tf.parent} -> {tf.child} must be a finite (4, 4) matrix")
            x, y, z, w = wxyz_to_xyzw(matrix_to_quat_wxyz(T[:3, :3]))
            items.append(types["geometry_msgs/msg/TransformStamped"](
                header=self._header(stamp_ns, tf.parent), child_frame_id=tf.child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                    rotation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))))
        self._write(self.config.tf_static_topic, TF_MESSAGE, stamp_ns, types[TF_MESSAGE](transforms=items),
                    QOS_LATCHED)


# --------------------------------------------------------------------------- sources


def list_timestamped_images(folder: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[TimedImage]:
    """Images ``<timestamp_us>.<ext>`` of ``folder`` sorted by timestamp; other names raise BagError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BagError(f"image folder not found: {folder}")
    images = []
    for path in folder.iterdir():
        if path.suffix.lower() not in extensions:
            continue
        if not path.stem.isdigit():
            raise BagError(f"{path}: image names must be integer timestamps in µs (e.g. 1417176458999821.jpg)")
        images.append(TimedImage(int(path.stem), path))
    if not images:
        raise BagError(f"no {'/'.join(extensions)} images in {folder}")
    images.sort(key=lambda im: im.timestamp_us)
    stamps = [im.timestamp_us for im in images]
    if len(set(stamps)) != len(stamps):
        raise BagError(f"{folder}: two images share a timestamp (e.g. .jpg and .png of one stamp)")
    return images


def read_seasons_intrinsics(path: str | Path, width: int, height: int) -> Camera:
    """RobotCar Seasons ``<camera>_intrinsics.txt`` (``fx v``/``fy v``/``cx v``/``cy v``) -> PINHOLE Camera."""
    path = Path(path)
    return camera_from_intrinsics(read_intrinsics(path), width, height, path)


def _compressed_format(path: Path, jpeg_format: str) -> str:
    return jpeg_format if path.suffix.lower() in (".jpg", ".jpeg") else "png"


def write_image_folder_bag(out: str | Path, images: Sequence[TimedImage], config: BagConfig = BagConfig(),
                           camera: Camera | None = None, camera_pose_in_base: np.ndarray | None = None) -> BagSummary:
    """Bag of image files (bytes unchanged as ``CompressedImage``), CameraInfo and ``/tf_static``.

    Args:
        images: the sequence, sorted by timestamp.
        camera: intrinsics for CameraInfo; None -> no CameraInfo topic. Its size must equal the images'.
        camera_pose_in_base: (4, 4) pose of the optical frame in ``config.base_frame``; None -> identity.
    """
    if not images:
        raise BagError("no images to write")
    first_size = image_size(images[0].path)
    if camera is not None and (camera.width, camera.height) != first_size:
        raise BagError(f"camera is {camera.width}x{camera.height} but {images[0].path} is "
                       f"{first_size[0]}x{first_size[1]}")
    T = np.eye(4) if camera_pose_in_base is None else np.asarray(camera_pose_in_base, dtype=np.float64)
    with BagWriter(out, config) as writer:
        writer.write_static_transforms(stamp_from_us(images[0].timestamp_us),
                                       [StaticTransform(config.base_frame, config.frame_id, T)])
        for image in images:
            size = image_size(image.path)
            if size != first_size:
                raise BagError(f"{image.path} is {size[0]}x{size[1]}, the sequence is "
                               f"{first_size[0]}x{first_size[1]}: one camera per bag")
            stamp = stamp_from_us(image.timestamp_us)
            if camera is not None:  # before its image, so a subscriber has the intrinsics first
                writer.write_camera_info(stamp, camera)
            writer.write_compressed_image(stamp, image.path.read_bytes(),
                                          _compressed_format(image.path, config.jpeg_format))
    LOG.info("wrote %s: %s", out, writer.summary.counts)
    return writer.summary


def write_folder_bag(out: str | Path, folder: str | Path, config: BagConfig = BagConfig(),
                     intrinsics_path: str | Path | None = None,
                     camera_pose_in_base: np.ndarray | None = None) -> BagSummary:
    """Bag of a folder of ``<timestamp_us>.jpg|.png``; CameraInfo from ``intrinsics_path`` when given."""
    images = list_timestamped_images(folder)
    camera = None
    if intrinsics_path is not None:
        try:
            camera = read_seasons_intrinsics(intrinsics_path, *image_size(images[0].path))
        except DatasetError as exc:
            raise BagError(f"intrinsics of {folder}: {exc}") from exc
    else:
        LOG.warning("no intrinsics for %s: the bag has no CameraInfo topic", folder)
    return write_image_folder_bag(out, images, config, camera, camera_pose_in_base)


def write_seasons_bag(out: str | Path, root: str | Path, condition: str, camera: str,
                      config: BagConfig = BagConfig(), camera_pose_in_base: np.ndarray | None = None) -> BagSummary:
    """Bag of one RobotCar-Seasons-layout sequence ``images/<condition>/<camera>`` with its intrinsics."""
    root = Path(root)
    return write_folder_bag(out, root / "images" / condition / camera, config,
                            root / "intrinsics" / f"{camera}_intrinsics.txt", camera_pose_in_base)


def write_robotcar_raw_bag(out: str | Path, sequence, config: BagConfig = BagConfig(), encoding: str = "jpeg",
                           jpeg_quality: int = 95, start: int = 0, limit: int | None = None,
                           step: int = 1) -> BagSummary:
    """Bag of a raw RobotCar camera sequence.

    Args:
        sequence: a :class:`~ros2_s2dhm.datasets.robotcar_raw.RawSequence`.
        encoding: ``rgb8``/``bgr8`` -> ``Image``; ``jpeg``/``png`` -> re-encoded ``CompressedImage``.
        start, limit, step: frames ``start, start + step, ...`` (at most ``limit``).
    """
    if encoding not in RAW_ENCODINGS + COMPRESSED_ENCODINGS:
        raise BagError(f"encoding {encoding!r} is not supported; use one of {RAW_ENCODINGS + COMPRESSED_ENCODINGS}")
    indices = list(range(start, len(sequence), max(1, step)))[:limit]
    if not indices:
        raise BagError(f"no frames selected from {len(sequence)} (start={start}, step={step}, limit={limit})")
    with BagWriter(out, config) as writer:
        camera = None
        for n, index in enumerate(indices):
            stamp = stamp_from_us(sequence.frames[index].timestamp_us)
            rgb = sequence.load(index)
            if n == 0:
                writer.write_static_transforms(
                    stamp, [StaticTransform(config.base_frame, config.frame_id, sequence.optical_pose_in_base())])
                if sequence.camera_model is not None:
                    camera = sequence.pinhole_camera(rgb.shape[1], rgb.shape[0])
            if camera is not None:  # before its image, so a subscriber has the intrinsics first
                writer.write_camera_info(stamp, camera)
            if encoding in RAW_ENCODINGS:
                writer.write_image(stamp, rgb, encoding)
            else:
                params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if encoding == "jpeg" else []
                ok, data = cv2.imencode(f".{'jpg' if encoding == 'jpeg' else 'png'}", rgb[:, :, ::-1], params)
                if not ok:
                    raise BagError(f"cannot encode {sequence.frames[index].path} as {encoding}")
                writer.write_compressed_image(stamp, data.tobytes(),
                                              config.jpeg_format if encoding == "jpeg" else "png")
    LOG.info("wrote %s: %s", out, writer.summary.counts)
    return writer.summary


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class BagMessage:
    """A serialized message: topic, type, bag time (ns) and CDR bytes."""

    topic: str
    msgtype: str
    stamp_ns: int
    rawdata: bytes


@dataclass(frozen=True)
class TopicSpec:
    """A topic of a bag: type, message count and the QoS profiles offered when recorded."""

    name: str
    msgtype: str
    count: int
    qos: tuple[Qos, ...]

    @property
    def transient_local(self) -> bool:
        return any(q.durability == QosDurability.TRANSIENT_LOCAL for q in self.qos)


def _open_reader(path: str | Path) -> Reader:
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"not a rosbag2 folder (no metadata.yaml): {path}")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises its own ReaderError family and OSError
        raise BagError(f"cannot open bag {path}: {exc}") from exc
    return reader


def bag_topics(path: str | Path) -> dict[str, TopicSpec]:
    """Topics of the bag at ``path``."""
    reader = _open_reader(path)
    try:
        specs: dict[str, TopicSpec] = {}
        for conn in reader.connections:
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            old = specs.get(conn.topic)
            count = conn.msgcount + (old.count if old else 0)
            specs[conn.topic] = TopicSpec(conn.topic, conn.msgtype, count, qos + (old.qos if old else ()))
        return specs
    finally:
        reader.close()


def iter_bag_messages(path: str | Path, topics: Iterable[str] | None = None,
                      start_offset_ns: int = 0) -> Iterator[BagMessage]:
    """Serialized messages in bag-time order, from ``start + start_offset_ns`` on."""
    reader = _open_reader(path)
    try:
        wanted = None if topics is None else set(topics)
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        start = reader.start_time + int(start_offset_ns)
        for conn, stamp, raw in reader.messages(connections=conns, start=start):
            yield BagMessage(conn.topic, conn.msgtype, int(stamp), bytes(raw))
    finally:
        reader.close()


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, object]]:
    """(topic, bag time ns, message deserialized by rosbags) in bag-time order."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"not a rosbag2 folder (no metadata.yaml): {path}")
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        wanted = None if topics is None else set(topics)
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        for conn, stamp, raw in reader.messages(connections=conns):
            yield conn.topic, int(stamp), reader.deserialize(raw, conn.msgtype)


def extract_frames(bag: str | Path, image_topic: str, out: str | Path,
                   camera_info_topic: str | None = None, every: int = 1):
    """Write every ``every``-th image of ``image_topic`` (Image or CompressedImage) to
    ``out/<stamp_ns>.png`` (stamp: the header's) and return ``(frames, camera)``: a list of
    :class:`~ros2_s2dhm.drive_map.Frame` (names relative to ``out``'s parent) and the camera of
    the first CameraInfo on ``camera_info_topic`` (None without one). Raises BagError."""
    import cv2  # noqa: PLC0415
    from rosbags.image import message_to_cvimage  # noqa: PLC0415

    from ros2_s2dhm.drive_map import Frame  # noqa: PLC0415
    from ros2_s2dhm.ros.conversions import camera_info_to_camera, stamp_to_ns  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    topics = [image_topic] + ([camera_info_topic] if camera_info_topic else [])
    if image_topic not in bag_topics(bag):
        raise BagError(f"bag {bag} has no topic {image_topic!r}; it has {sorted(bag_topics(bag))}")
    frames, camera, seen = [], None, 0
    for topic, _, msg in read_messages(bag, topics):
        if topic != image_topic:
            if camera is None:
                camera = camera_info_to_camera(msg)
            continue
        seen += 1
        if (seen - 1) % every:
            continue
        stamp = stamp_to_ns(msg.header.stamp)
        path = out / f"{stamp}.png"
        try:
            cv2.imwrite(str(path), message_to_cvimage(msg, "bgr8"))
        except Exception as exc:  # rosbags-image raises its own errors for bad encodings
            raise BagError(f"bag {bag}: image stamped {stamp} on {image_topic} cannot be "
                           f"decoded ({exc})") from exc
        frames.append(Frame(f"{out.name}/{path.name}", path, stamp))
    if not frames:
        raise BagError(f"bag {bag}: no image on {image_topic}")
    return frames, camera
