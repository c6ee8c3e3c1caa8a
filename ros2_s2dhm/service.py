"""A stream of camera frames in, localization outcomes out: what the node serves, without ROS.

:class:`LocalizationService` owns everything between a frame's arrival and its outcome:

* the pipeline and its map: :meth:`~LocalizationService.load_map` (weights + map, a warm-up
  pass), a failed reload keeps serving the old map and says so;
* a one-frame slot (the newest frame replaces an unread one, counted as dropped), the
  ``continuous`` / armed (one-shot) / ``max_rate_hz`` scheduling, and a worker thread that
  localizes the slot's frame (:meth:`~LocalizationService.start`);
* the retrieval priors: tracking (near the last pose; a failure retries without it on the same
  backbone pass) and an initial pose;
* the per-frame time budget that bounds latency (:class:`~ros2_s2dhm.latency_budget.AdaptiveBudget`);
* counters, receive/processing rates, frames lost before arrival (from stamp gaps), and for
  every frame the reason it got no pose.

Callers adapt it: the ROS node turns messages into :meth:`~LocalizationService.offer` calls
and :class:`Outcome` objects into messages; anything else (a test, a tool) can feed it the
same way. Payloads are opaque: the caller's ``decode(payload) -> RGB array`` runs on the worker.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InputImageError, S2DHMError
from .latency_budget import AdaptiveBudget
from .localizer_options import localizer_config
from .options import option

#: Seconds over which the receive and processing rates are measured.
RATE_WINDOW_S = 5.0
#: A repeated problem message is reported for logging at most once per this many seconds.
LOG_REPEAT_S = 5.0
#: A stamp gap farther than this (in periods) from a whole number of periods is off the grid;
#: with more than IRREGULAR_SHARE of the recent gaps off it, frames_lost is not estimated.
OFF_GRID = 0.25
IRREGULAR_SHARE = 0.2


@dataclass
class ServiceConfig:
    """The service's options (the node's parameters of the same names)."""

    map_dir: str = option("", "reference map directory (built by build_map); applied by "
                              "~/reload_map (or configure); empty: no map")
    weights: str = option("default", "network weights: 'default' (the shipped weights), 'random' "
                                     "(seeded random initialisation, testing only) or a file "
                                     "path; applied by ~/reload_map")
    device: str = option("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:1, "
                                 "...; applied by ~/reload_map")
    warmup: bool = option(True, "run one dummy localization after loading so the first frame "
                                "is not slow")
    camera_info_wait_s: float = option(1.0, "an image that arrives before the first camera "
                                            "(CameraInfo) waits this long for it (bags write "
                                            "CameraInfo after the image)", low=0.0, high=60.0)
    continuous: bool = option(True, "localize every frame; false: only after "
                                    "~/trigger_localization")
    max_rate_hz: float = option(0.0, "at most this many localizations per second; 0: unlimited",
                                low=0.0)
    latency_budget_factor: float = option(
        1.3, "verify no further reference once a frame has taken this many times the median "
             "pipeline time of recent frames (bounds the latency of a live stream; the "
             "localizer's time_budget_ms, when set, takes precedence); 0: off", low=0.0)
    max_image_age_s: float = option(0.0, "skip (WARN) frames older than this when processing "
                                         "starts; 0: off", low=0.0)
    tracking_enabled: bool = option(True, "after a success, retrieve only references near the "
                                          "last pose (a failure retries without the prior, on "
                                          "the same features)")
    tracking_radius_m: float = option(25.0, "radius of the tracking prior (map units)", low=0.0)
    prior_radius_m: float = option(50.0, "radius of the initialpose retrieval prior (map units)",
                                   low=0.0)


class Level(enum.IntEnum):
    """Severity of an outcome or of the service's state (diagnostic_msgs' levels)."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass
class Frame:
    """A frame waiting in (or taken from) the slot. ``payload``: the caller's (e.g. a message)."""

    payload: Any
    stamp_ns: int
    received: float                 # time.monotonic() at arrival
    decode_ms: float = 0.0          # payload -> RGB array
    budget_ms: float | None = None  # the time budget it ran under (None: none)


@dataclass
class Outcome:
    """What became of one frame taken from the slot.

    result: the LocalizationResult (None when the frame was not localized: stale, bad input,
    no map); a pose is to be published only when ``result.success``. image [H, W, 3] uint8 and
    camera: what was localized. counter: the counter this outcome incremented. log: the message
    is not a repeat of the last few seconds (log it), with ``detail`` when there is one.
    """

    level: Level
    message: str
    counter: str
    frame: Frame
    values: dict[str, str] = field(default_factory=dict)
    result: Any = None
    image: np.ndarray | None = None
    camera: Any = None
    log: bool = True
    detail: str = ""  # e.g. the traceback of an unexpected error (for the log only)

    def __post_init__(self):
        # every status names the frame it is about (the diagnostics timer republishes the last
        # one, so a reader matches this stamp rather than taking the next status it sees)
        self.values.setdefault("frame_stamp_ns", str(self.frame.stamp_ns))

    @property
    def pose_verified(self) -> bool:
        return self.result is not None and self.result.success and self.result.pose is not None


@dataclass
class Counters:
    """What happened to the frames (reported on /diagnostics under these names)."""

    frames_received: int = 0
    frames_lost: int = 0       # never arrived (gaps between header stamps)
    frames_processed: int = 0
    frames_dropped: int = 0    # replaced in the slot while the worker was busy
    frames_stale: int = 0
    frames_bad_input: int = 0
    localization_failures: int = 0
    poses_published: int = 0
    backbone_passes: int = 0


class Rates:
    """Receive/processing rates over a sliding window and frames lost before arrival.

    Lost frames are counted from header stamps: the nominal period is the smallest positive
    stamp difference among the last 50, and a gap of ``n`` periods means ``n - 1`` frames never
    arrived. That holds for a camera that stamps frames at a fixed rate; when more than a fifth
    of the recent gaps are not near a whole number of periods (software stamping on a busy
    machine, a variable rate) the count cannot be trusted and :attr:`stamps_regular` says so.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self.received = collections.deque()
        self.processed = collections.deque()
        self.periods = collections.deque(maxlen=50)
        self.off_grid = collections.deque(maxlen=50)  # gap not near n periods
        self.last_stamp_ns: int | None = None

    def on_receive(self, now: float, stamp_ns: int) -> int:
        """Record a frame; returns how many frames went missing just before it."""
        self.received.append(now)
        lost = 0
        if self.last_stamp_ns is not None and stamp_ns > self.last_stamp_ns:
            gap = stamp_ns - self.last_stamp_ns
            self.periods.append(gap)
            periods = gap / min(self.periods)
            self.off_grid.append(abs(periods - round(periods)) > OFF_GRID)
            lost = max(0, int(round(periods)) - 1)
        if self.last_stamp_ns is None or stamp_ns > self.last_stamp_ns:
            self.last_stamp_ns = stamp_ns
        return lost

    @property
    def stamps_regular(self) -> bool:
        """Whether the recent stamps follow a fixed rate (the lost count is meaningful)."""
        return not self.off_grid or sum(self.off_grid) <= IRREGULAR_SHARE * len(self.off_grid)

    def on_processed(self, now: float) -> None:
        self.processed.append(now)

    def hz(self, now: float) -> tuple[float, float]:
        """(receive rate, processing rate) in Hz over the window."""
        for times in (self.received, self.processed):
            while times and now - times[0] > self.window_s:
                times.popleft()
        return len(self.received) / self.window_s, len(self.processed) / self.window_s


def check_image_size(image: np.ndarray, camera) -> None:
    """InputImageError if the image [H, W, ...] differs in size from the camera."""
    height, width = image.shape[:2]
    if (width, height) != (camera.width, camera.height):
        raise InputImageError(f"image is {width}x{height} but the camera is "
                              f"{camera.width}x{camera.height}")


class LocalizationService:
    """See the module doc. ``factory(map_dir, weights, device, localizer_options)`` builds the
    pipeline (:func:`ros2_s2dhm.runtime.build_localizer`'s first result, or a fake in tests);
    ``clock_ns()`` is the clock frame stamps are compared with (the node's ROS clock)."""

    def __init__(self, config: ServiceConfig, localizer_options: dict, factory: Callable,
                 clock_ns: Callable[[], int] = time.time_ns):
        self.config = config
        self.localizer_options = dict(localizer_options)
        localizer_config(**self.localizer_options)  # refused options fail here, named
        self._factory = factory
        self._clock_ns = clock_ns
        self._cond = threading.Condition()        # slot, counters, priors
        self._pipeline_lock = threading.Lock()    # one localization at a time
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._pending: Frame | None = None
        self._armed = False
        self._last_start = -np.inf
        self.active = False
        self.counters = Counters()
        self._rates = Rates()
        self._budget = AdaptiveBudget(config.latency_budget_factor)
        self._last_pose_time: float | None = None
        self._last_log: tuple[str, float] = ("", 0.0)
        self._tracking_center: np.ndarray | None = None
        self._initial_center: np.ndarray | None = None
        self.pipeline = None
        self.device = "cpu"
        self.map_in_use: str | None = None
        self.map_error = "map_dir is not set"
        self.reload_error: str | None = None
        self.camera = None
        self.camera_problem = "no camera intrinsics received yet"
        self._camera_received = threading.Event()
        self.status: tuple[Level, str, dict] = (Level.ERROR, "starting", {})

    # ------------------------------------------------------------------ options

    def update(self, changes: dict) -> list[str]:
        """Apply checked option values (service and localizer names); the localizer's take
        effect on the running pipeline at once. Returns the localizer options changed."""
        service = {k: v for k, v in changes.items()
                   if k in {f.name for f in dataclasses.fields(ServiceConfig)}}
        localizer = {k: v for k, v in changes.items() if k not in service}
        if service:
            self.config = dataclasses.replace(self.config, **service)
            with self._cond:
                self._budget.factor = self.config.latency_budget_factor
        if localizer:
            config = localizer_config(**{**self.localizer_options, **localizer})
            self.localizer_options.update(localizer)
            with self._pipeline_lock:
                if self.pipeline is not None and hasattr(self.pipeline, "configure"):
                    self.pipeline.configure(config)
        return sorted(localizer)

    # ------------------------------------------------------------------ map

    def load_map(self) -> tuple[bool, str]:
        """(Re)load map + weights from the options; keeps the old pipeline on error."""
        from .runtime import resolve_device  # noqa: PLC0415 (torch only when a map is loaded)

        requested = self.config.map_dir
        if not requested:
            return self._load_failed("parameter map_dir is empty: no map loaded; set it and "
                                     "call ~/reload_map")
        start = time.perf_counter()
        try:
            device = resolve_device(self.config.device)
            pipeline = self._factory(requested, self.config.weights, device,
                                     dict(self.localizer_options))
        except (S2DHMError, OSError, ValueError, RuntimeError) as exc:
            return self._load_failed(f"cannot load map {requested!r}: {exc}")
        warning = self._warm_up(pipeline) if self.config.warmup else None
        with self._pipeline_lock:
            self.pipeline, self.device = pipeline, device
            self.map_in_use, self.map_error, self.reload_error = requested, None, None
        with self._cond:
            self._tracking_center = None
        message = f"map {requested!r} loaded on {device} in {time.perf_counter() - start:.1f} s"
        if warning:
            message += f" ({warning})"
        self.status = (Level.OK, message, {})
        return True, message

    def _load_failed(self, error: str) -> tuple[bool, str]:
        """ERROR naming the map still in use (if any) until a reload succeeds."""
        if self.pipeline is None:
            self.map_error = error
        else:
            error += f"; still serving map {self.map_in_use!r}"
        self.reload_error = error
        self.status = (Level.ERROR, error, {})
        return False, error

    def release(self, reason: str = "released (cleanup)") -> None:
        with self._pipeline_lock:
            self.pipeline, self.map_in_use, self.map_error = None, None, reason

    @staticmethod
    def _warm_up(pipeline) -> str | None:
        """One dummy query so lazy initialisation is not paid by frame 1; a failure is only
        reported."""
        from .geometry.camera import Camera  # noqa: PLC0415

        width, height = 160, 120
        camera = Camera.from_pinhole(100.0, 100.0, width / 2 - 0.5, height / 2 - 0.5, width, height)
        try:
            pipeline.localize(np.full((height, width, 3), 127, np.uint8), camera, None, None)
        except Exception as exc:  # a warm-up failure is not fatal
            return f"warm-up pass failed: {exc}"
        return None

    # ------------------------------------------------------------------ inputs

    def set_camera(self, camera, problem: str | None = None) -> None:
        """The intrinsics frames are localized with (None with the reason it is unusable)."""
        self.camera, self.camera_problem = camera, (None if camera is not None else problem)
        self._camera_received.set()  # after the camera is set: a waiting frame reads it

    def offer(self, payload, stamp_ns: int) -> None:
        """A frame arrived: it replaces the slot's unread frame (counted as dropped)."""
        if not self.active:
            return
        now = time.monotonic()
        with self._cond:
            self.counters.frames_received += 1
            self.counters.frames_lost += self._rates.on_receive(now, stamp_ns)
            if self._pending is not None and (self.config.continuous or self._armed):
                self.counters.frames_dropped += 1
            self._pending = Frame(payload, stamp_ns, now)
            self._cond.notify()

    def arm(self) -> None:
        """One-shot mode: localize the newest frame."""
        with self._cond:
            self._armed = True
            self._cond.notify()

    def clear_pending(self) -> None:
        with self._cond:
            self._pending = None
        with self._pipeline_lock:  # let the frame in flight finish
            pass

    def set_initial_prior(self, center: np.ndarray) -> None:
        with self._cond:
            self._initial_center = np.asarray(center, float)
            self._tracking_center = None

    def reset_priors(self) -> None:
        with self._cond:
            self._tracking_center = self._initial_center = None

    # ------------------------------------------------------------------ worker

    def start(self, decode: Callable[[Any], np.ndarray], on_outcome: Callable[[Outcome], None]
              ) -> None:
        """Start the worker: it takes frames from the slot, ``decode(payload)`` -> RGB,
        localizes them and hands each :class:`Outcome` to ``on_outcome``."""
        self._stop.clear()
        self._worker = threading.Thread(target=self._worker_loop, args=(decode, on_outcome),
                                        name="s2dhm_worker", daemon=True)
        self._worker.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker (the frame in flight finishes) and empty the slot."""
        self._stop.set()
        with self._cond:
            self._pending = None
            self._cond.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=timeout_s)
        self._worker = None

    def next_frame(self) -> Frame | None:
        """The slot's frame once scheduling allows (None when stopped)."""
        with self._cond:
            while not self._stop.is_set():
                ready = self._pending is not None and (self.config.continuous or self._armed)
                wait = 0.1
                if ready:
                    rate = self.config.max_rate_hz
                    wait = self._last_start + (1.0 / rate if rate > 0 else 0.0) - time.monotonic()
                    if wait <= 0:
                        frame, self._pending, self._armed = self._pending, None, False
                        self._last_start = time.monotonic()
                        return frame
                self._cond.wait(timeout=min(wait, 0.1))
        return None

    def _worker_loop(self, decode, on_outcome) -> None:
        while (frame := self.next_frame()) is not None:
            try:
                outcome = self.process(frame, decode)
            except Exception as exc:  # keep serving whatever happens
                if self._stop.is_set():
                    return
                outcome = Outcome(Level.ERROR, f"unexpected error: {exc}", "", frame,
                                  detail=traceback.format_exc())
            self.status = (outcome.level, outcome.message, outcome.values)
            try:
                on_outcome(outcome)
            except Exception:
                if self._stop.is_set():
                    return  # shutting down: the caller's outputs are gone
                raise

    def _prior(self):
        """(center, radius, source) for the next query."""
        with self._cond:
            if self.config.tracking_enabled and self._tracking_center is not None:
                return self._tracking_center, self.config.tracking_radius_m, "tracking"
            if self._initial_center is not None:
                return self._initial_center, self.config.prior_radius_m, "initialpose"
        return None, None, "retrieval"

    def _frame_budget_ms(self) -> float | None:
        """This frame's time budget: None (the localizer's time_budget_ms) when that is set,
        else latency_budget_factor x the recent median pipeline time (None while warming up)."""
        if self.localizer_options.get("time_budget_ms", 0.0) > 0:
            return None
        with self._cond:
            return self._budget.budget_ms()

    def _problem(self, frame: Frame, message: str, counter: str, level: Level = Level.WARN,
                 **kw) -> Outcome:
        """A frame without a pose: counted, and reported (a repeat within LOG_REPEAT_S is
        not logged again)."""
        now = time.monotonic()
        with self._cond:
            if counter:
                setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            log = message != self._last_log[0] or now - self._last_log[1] > LOG_REPEAT_S
            if log:
                self._last_log = (message, now)
        return Outcome(level, message, counter, frame, log=log, **kw)

    def _stamp_problem(self, stamp_ns: int) -> str | None:
        """Why a frame's stamp makes it unusable (None: usable)."""
        if stamp_ns <= 0:
            return (f"frame skipped: header stamp is {'zero' if stamp_ns == 0 else 'negative'} "
                    f"({stamp_ns} ns); the camera driver must stamp its images")
        max_age = self.config.max_image_age_s
        if max_age > 0:
            age = (self._clock_ns() - stamp_ns) * 1e-9
            if age > max_age:
                return f"frame skipped: image is {age:.2f} s old (max_image_age_s={max_age})"
        return None

    def process(self, frame: Frame, decode: Callable[[Any], np.ndarray]) -> Outcome:
        """Localize one frame: stamp check, camera, decoding, the one backbone pass, the
        cascade under the frame's time budget (with the tracking prior, retried without it on
        the same features when it fails)."""
        problem = self._stamp_problem(frame.stamp_ns)
        if problem is not None:
            return self._problem(frame, problem, "frames_stale")
        if not self._camera_received.is_set():
            self._camera_received.wait(self.config.camera_info_wait_s)
        camera = self.camera
        if camera is None:
            return self._problem(frame, f"bad input: {self.camera_problem}", "frames_bad_input")
        try:
            start = time.perf_counter()
            image = decode(frame.payload)
            frame.decode_ms = 1e3 * (time.perf_counter() - start)
            check_image_size(image, camera)
        except S2DHMError as exc:
            return self._problem(frame, f"bad input: {exc}", "frames_bad_input")
        with self._pipeline_lock:
            pipeline = self.pipeline
            if pipeline is None:
                return Outcome(Level.ERROR, f"no map loaded: {self.map_error}", "", frame, log=False)
            center, radius, source = self._prior()
            frame.budget_ms = self._frame_budget_ms()
            try:
                features = pipeline.features(image, camera)  # the one backbone pass
                self.counters.backbone_passes += 1
                result = pipeline.localize_features(features, center, radius,
                                                    time_budget_ms=frame.budget_ms)
                if not result.success and source == "tracking":
                    source = "retrieval (tracking prior failed)"
                    result = pipeline.localize_features(features, None, None,
                                                        time_budget_ms=frame.budget_ms)
            except S2DHMError as exc:
                return self._problem(frame, f"bad input: {exc}", "frames_bad_input")
        now = time.monotonic()
        with self._cond:
            self.counters.frames_processed += 1
            self._rates.on_processed(now)
            self._budget.observe(result.timings_ms.get("total", np.nan))
            if result.success:
                self._tracking_center = result.pose.center
                self._initial_center = None
                self.counters.poses_published += 1
                self._last_pose_time = now
            else:
                self._tracking_center = None
        values = self._result_values(result, source, frame)
        if result.success and result.pose is not None:
            return Outcome(Level.OK, "localized", "", frame, values, result, image, camera)
        return self._problem(frame, f"localization failed: {result.failure_reason}",
                             "localization_failures", values=values, result=result,
                             image=image, camera=camera)

    def _result_values(self, result, source: str, frame: Frame) -> dict[str, str]:
        values = {f"latency_{stage}_ms": f"{ms:.1f}" for stage, ms in result.timings_ms.items()}
        values.update({
            "latency_decode_ms": f"{frame.decode_ms:.1f}",
            "time_budget_ms": "none" if frame.budget_ms is None else f"{frame.budget_ms:.0f}",
            "latency_receive_to_result_ms": f"{1e3 * (time.monotonic() - frame.received):.1f}",
            "latency_stamp_to_result_ms": f"{(self._clock_ns() - frame.stamp_ns) * 1e-6:.1f}",
            "num_matches": str(result.num_matches),
            "num_inliers": str(result.num_inliers),
            "confidence": f"{result.confidence:.3f}",
            "supporting_references": " ".join(result.supporting_references) or "none",
            "references_matched": str(len(result.reference_names)),
            "retrieval_score": (f"{result.retrieval_scores[0]:.4f}"
                                if result.retrieval_scores else "none"),
            "top_reference": result.reference_names[0] if result.reference_names else "none",
            "retrieval_prior": source,
            "refine_reason": str(result.refine_reason),
            "pose_published": str(bool(result.success and result.pose is not None)),
            "weights_random": str(getattr(result, "weights_random", False)),
        })
        return values

    # ------------------------------------------------------------------ reporting

    def diagnostics(self) -> tuple[Level, str, dict[str, str]]:
        """(level, message, values) of the service now: the last outcome's status, raised to
        ERROR while no map is loaded or a reload failed; counters, rates and state."""
        level, message, values = self.status
        if self.pipeline is None:
            level, message = Level.ERROR, f"no map loaded: {self.map_error}"
        elif self.reload_error is not None:  # the requested map is not the one serving
            level = Level.ERROR
            if message != self.reload_error:
                message = f"{message}; {self.reload_error}"
        now = time.monotonic()
        with self._cond:
            summary = {k: str(v) for k, v in dataclasses.asdict(self.counters).items()}
            receive_hz, processed_hz = self._rates.hz(now)
            last_pose = self._last_pose_time
            if not self._rates.stamps_regular:  # say so rather than guess
                summary["frames_lost"] = (f"unknown (header stamps are not at a fixed rate; "
                                          f"{self.counters.frames_lost} by stamp gaps)")
        summary.update({
            "receive_rate_hz": f"{receive_hz:.2f}", "processed_rate_hz": f"{processed_hz:.2f}",
            "last_pose_age_s": "never" if last_pose is None else f"{now - last_pose:.2f}",
            "active": str(self.active),
            "map_loaded": str(self.pipeline is not None),
            "map_in_use": str(self.map_in_use or "none"),
            "map_dir": str(self.config.map_dir), "device": self.device,
            "reload_error": str(self.reload_error or "none"),
            "camera": "ok" if self.camera is not None else str(self.camera_problem)})
        summary.update(values)
        return level, message, summary

    def counts_text(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in
                         dataclasses.asdict(self.counters).items())
