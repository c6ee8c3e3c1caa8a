"""Replay of rosbag2 files through rclpy, for machines without ``ros2 bag play``.

Messages are read by ``rosbags`` and published as the recorded CDR bytes (rclpy's raw
publish, no field-by-field copying); :func:`iter_rclpy_messages` deserializes them into
rclpy message classes for callers that want message objects. Topics whose message
package is not importable (e.g. ``tf2_msgs``, which has no wheel) are skipped with a log
line. Publishers use the QoS the bag offered: ``/tf_static`` and every topic recorded
transient-local are published transient-local.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.interfaces import QosReliability

from ros2_s2dhm.errors import BagError
from ros2_s2dhm.ros.bags import TopicSpec, bag_topics, iter_bag_messages

LOG = logging.getLogger(__name__)

_CLASS_CACHE: dict[str, type | None] = {}


def message_class(msgtype: str) -> type | None:
    """rclpy message class of ``pkg/msg/Name`` (or ``pkg/Name``), None when not importable."""
    if msgtype not in _CLASS_CACHE:
        parts = msgtype.split("/")
        cls = None
        if len(parts) in (2, 3):
            package, name = parts[0], parts[-1]
            interface = parts[1] if len(parts) == 3 else "msg"
            try:
                cls = getattr(importlib.import_module(f"{package}.{interface}"), name)
            except (ImportError, AttributeError):
                cls = None
        _CLASS_CACHE[msgtype] = cls
    return _CLASS_CACHE[msgtype]


def iter_rclpy_messages(path: str | Path, topics: Iterable[str] | None = None,
                        start_offset_ns: int = 0) -> Iterator[tuple[str, int, object]]:
    """(topic, bag time ns, rclpy message) in bag-time order; topics of unimportable types are skipped."""
    skipped: set[str] = set()
    for msg in iter_bag_messages(path, topics, start_offset_ns):
        cls = message_class(msg.msgtype)
        if cls is None:
            if msg.topic not in skipped:
                LOG.warning("skipping %s: message type %s is not importable in this Python", msg.topic, msg.msgtype)
                skipped.add(msg.topic)
            continue
        yield msg.topic, msg.stamp_ns, deserialize_message(msg.rawdata, cls)


def parse_remaps(items: Iterable[str]) -> dict[str, str]:
    """``["old:=new", ...]`` -> ``{old: new}``."""
    remap = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise BagError(f"topic remap {item!r} must have the form old_topic:=new_topic")
        remap[old] = new
    return remap


QOS_PROFILES = ("reliable", "best_effort", "transient_local")


def parse_qos_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["topic=profile", ...]`` -> ``{topic: profile}``, profile in :data:`QOS_PROFILES`."""
    overrides = {}
    for item in items:
        topic, sep, profile = item.rpartition("=")
        if not sep or not topic or profile not in QOS_PROFILES:
            raise BagError(f"QoS override {item!r} must have the form topic={'|'.join(QOS_PROFILES)}")
        overrides[topic] = profile
    return overrides


def qos_for_topic(spec: TopicSpec, depth: int = 10, override: str | None = None) -> QoSProfile:
    """Publisher QoS of a recorded topic.

    Transient-local (reliable) for ``/tf_static`` and topics recorded transient-local,
    best-effort when every recorded publisher was, else reliable volatile; ``override``
    (one of :data:`QOS_PROFILES`) replaces that choice.
    """
    if override is not None and override not in QOS_PROFILES:
        raise BagError(f"QoS profile {override!r} for {spec.name} is not one of {QOS_PROFILES}")
    latched = spec.transient_local or spec.name.rstrip("/").endswith("tf_static")
    best_effort = bool(spec.qos) and all(q.reliability == QosReliability.BEST_EFFORT for q in spec.qos)
    if override is not None:
        latched = override == "transient_local"
        best_effort = override == "best_effort"
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, depth) if not latched else max(1, depth, spec.count),
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


@dataclass
class PlayOptions:
    """Replay settings.

    rate: bag seconds per wall second (2.0 = twice as fast); <= 0 publishes as fast as possible.
    start_offset_s: skip this many seconds from the start of the bag.
    remap: recorded topic -> published topic.
    topics: only these recorded topics (None = all).
    qos_overrides: recorded topic -> ``reliable`` | ``best_effort`` | ``transient_local``.
    publish_clock: publish ``rosgraph_msgs/Clock`` with the bag time on ``clock_topic`` at ``clock_hz``.
    wait_for_subscribers: before playing, wait (at most ``wait_timeout_s``) until every
        publisher of a non-latched topic has this many subscribers.
    delay_s: wall seconds to wait before the first message (after ``wait_for_subscribers``), as
        ``ros2 bag play --delay``: a subscriber counted by the publisher may not have matched
        the publisher yet, and a volatile topic's first messages would be lost to it.
    """

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    remap: dict[str, str] = field(default_factory=dict)
    topics: tuple[str, ...] | None = None
    qos_overrides: dict[str, str] = field(default_factory=dict)
    publish_clock: bool = False
    clock_topic: str = "/clock"
    clock_hz: float = 40.0
    wait_for_subscribers: int = 0
    wait_timeout_s: float = 10.0
    delay_s: float = 0.0
    qos_depth: int = 10


@dataclass
class PlayStats:
    """Published message counts per (published) topic, skipped topics with the reason, loops done."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0


class BagPlayer:
    """Publishes the messages of a bag on ``node`` with the recorded timing.

    ``play()`` blocks until the bag (or ``stop_event``) ends; it needs no executor.
    """

    def __init__(self, node: Node, bag_path: str | Path, options: PlayOptions = PlayOptions()):
        if options.clock_hz <= 0:
            raise BagError(f"clock_hz must be > 0, got {options.clock_hz}")
        self.node = node
        self.bag_path = Path(bag_path)
        self.options = options
        self.specs = bag_topics(self.bag_path)
        self.stats = PlayStats()
        self.publishers = {}
        wanted = None if options.topics is None else set(options.topics)
        unknown = ((wanted or set()) | set(options.qos_overrides)) - set(self.specs)
        if unknown:
            raise BagError(f"topics {sorted(unknown)} are not in {self.bag_path} (it has {sorted(self.specs)})")
        for topic, spec in self.specs.items():
            if wanted is not None and topic not in wanted:
                continue
            cls = message_class(spec.msgtype)
            if cls is None:
                reason = f"message type {spec.msgtype} is not importable in this Python"
                LOG.warning("skipping %s: %s", topic, reason)
                self.stats.skipped[topic] = reason
                continue
            out_topic = options.remap.get(topic, topic)
            qos = qos_for_topic(spec, options.qos_depth, options.qos_overrides.get(topic))
            self.publishers[topic] = node.create_publisher(cls, out_topic, qos)
        self.clock_publisher = None
        if options.publish_clock:
            clock_cls = message_class("rosgraph_msgs/msg/Clock")
            if clock_cls is None:
                LOG.warning("rosgraph_msgs is not importable: %s is not published", options.clock_topic)
            else:
                self.clock_publisher = node.create_publisher(clock_cls, options.clock_topic, 10)
                self._clock_cls = clock_cls

    @property
    def topics(self) -> dict[str, str]:
        """Recorded topic -> published topic, for the topics that are played."""
        return {topic: pub.topic_name for topic, pub in self.publishers.items()}

    def wait_for_subscribers(self, count: int | None = None, timeout_s: float | None = None) -> bool:
        """Wait until each non-latched publisher has ``count`` subscribers; False on timeout."""
        count = self.options.wait_for_subscribers if count is None else count
        timeout_s = self.options.wait_timeout_s if timeout_s is None else timeout_s
        streamed = [pub for topic, pub in self.publishers.items()
                    if pub.qos_profile.durability != DurabilityPolicy.TRANSIENT_LOCAL]
        deadline = time.monotonic() + timeout_s
        while any(pub.get_subscription_count() < count for pub in streamed):
            if time.monotonic() > deadline:
                missing = [pub.topic_name for pub in streamed if pub.get_subscription_count() < count]
                LOG.warning("no %d subscriber(s) on %s after %.1f s; playing anyway", count, missing, timeout_s)
                return False
            time.sleep(0.02)
        return True

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_publisher is not None:
            msg = self._clock_cls()
            msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
            self.clock_publisher.publish(msg)

    def _sleep_until(self, wall_target: float, wall0: float, bag0: int, stop: threading.Event) -> bool:
        """Sleep to ``wall_target`` (monotonic), publishing the clock meanwhile; False when stopped."""
        period = 1.0 / self.options.clock_hz
        while True:
            now = time.monotonic()
            if self.clock_publisher is not None:
                self._publish_clock(bag0 + int((now - wall0) * self.options.rate * 1e9))
            remaining = wall_target - now
            if remaining <= 0:
                return not stop.is_set()
            if stop.wait(min(remaining, period) if self.clock_publisher is not None else remaining):
                return False

    def play(self, stop_event: threading.Event | None = None) -> PlayStats:
        """Publish the bag (again and again with ``loop``) and return the counts."""
        stop = stop_event or threading.Event()
        opts = self.options
        if opts.wait_for_subscribers > 0:
            self.wait_for_subscribers()
        if opts.delay_s > 0 and stop.wait(opts.delay_s):
            return self.stats
        start = time.monotonic()
        offset_ns = int(opts.start_offset_s * 1e9)
        while not stop.is_set():
            wall0 = time.monotonic()
            bag0 = None
            for msg in iter_bag_messages(self.bag_path, list(self.publishers), offset_ns):
                if bag0 is None:
                    bag0 = msg.stamp_ns
                if opts.rate > 0:
                    target = wall0 + (msg.stamp_ns - bag0) / 1e9 / opts.rate
                    if not self._sleep_until(target, wall0, bag0, stop):
                        break
                elif stop.is_set():
                    break
                else:
                    self._publish_clock(msg.stamp_ns)
                pub = self.publishers[msg.topic]
                pub.publish(msg.rawdata)
                self.stats.published[pub.topic_name] = self.stats.published.get(pub.topic_name, 0) + 1
            self.stats.loops += 1
            if bag0 is None:
                LOG.warning("nothing to play in %s after %.3f s", self.bag_path, opts.start_offset_s)
                break
            if not opts.loop:
                break
        for pub in self.publishers.values():
            if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                pub.wait_for_all_acked(Duration(seconds=2.0))
        self.stats.wall_s = time.monotonic() - start
        return self.stats

    def close(self) -> None:
        """Destroy the publishers."""
        for pub in self.publishers.values():
            self.node.destroy_publisher(pub)
        if self.clock_publisher is not None:
            self.node.destroy_publisher(self.clock_publisher)
        self.publishers = {}
        self.clock_publisher = None
