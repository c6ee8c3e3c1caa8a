"""LocalizationService without ROS: the slot, counters, priors, reasons, map reload, time budget,
the worker thread. A fake pipeline stands in for the Localizer (its staged API)."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from ros2_s2dhm.errors import InputImageError, MapFormatError
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.pose import Pose
from ros2_s2dhm.localizer import LocalizationResult
from ros2_s2dhm.service import Level, LocalizationService, ServiceConfig
from waiting import wait_for

CAMERA = Camera.from_pinhole(50.0, 50.0, 31.5, 23.5, 64, 48)
POSE = Pose.from_quaternion([1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
BLACK = 0  # the fake fails on a black image


class FakePipeline:
    def __init__(self, fail_with_prior=False, total_ms=10.0):
        self.fail_with_prior = fail_with_prior
        self.total_ms = total_ms
        self.calls, self.budgets, self.passes = [], [], 0

    def features(self, image, camera):
        self.passes += 1
        return image

    def localize(self, image, camera, prior_center=None, prior_radius_m=None):
        return self.localize_features(self.features(image, camera), prior_center, prior_radius_m)

    def localize_features(self, image, prior_center=None, prior_radius_m=None,
                          time_budget_ms=None):
        self.calls.append(prior_center is not None)
        self.budgets.append(time_budget_ms)
        if int(image.max()) == BLACK or (self.fail_with_prior and prior_center is not None):
            return LocalizationResult(success=False, failure_reason="too few inliers (fake)",
                                      timings_ms={"total": self.total_ms})
        return LocalizationResult(success=True, pose=POSE, confidence=1.0,
                                  reference_names=["ref/0.jpg"], retrieval_scores=[0.9],
                                  timings_ms={"total": self.total_ms})


def image(value=128):
    return np.full((CAMERA.height, CAMERA.width, 3), value, np.uint8)


def decode(payload):
    if isinstance(payload, str):
        raise InputImageError(f"Image.encoding {payload!r} is not a known image encoding")
    return payload


def make(pipeline=None, factory=None, **config):
    pipeline = pipeline or FakePipeline()
    service = LocalizationService(
        ServiceConfig(map_dir="/fake/map", device="cpu", warmup=False, **config), {},
        factory or (lambda *args: pipeline), clock_ns=lambda: 10**12)
    assert service.load_map()[0]
    service.set_camera(CAMERA)
    service.active = True
    return service, pipeline


def run_one(service, payload, stamp_ns):
    service.offer(payload, stamp_ns)
    return service.process(service.next_frame(), decode)


def test_service_imports_no_ros():
    code = ("import sys, ros2_s2dhm.service; "
            "sys.exit(any(m.split('.')[0] in ('rclpy', 'sensor_msgs', 'rosbags') "
            "for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_newest_frame_wins_and_lost_frames_are_counted():
    service, _ = make()
    service.offer(image(), 1_000)
    service.offer(image(), 2_000)  # replaces the unread one
    service.offer(image(), 5_000)  # stamps 3000 and 4000 never arrived
    frame = service.next_frame()
    assert frame.stamp_ns == 5_000
    c = service.counters
    assert (c.frames_received, c.frames_dropped, c.frames_lost) == (3, 2, 2)
    service.active = False
    service.offer(image(), 6_000)  # inactive: ignored
    assert service.counters.frames_received == 3


def test_pose_tracking_prior_and_retry_on_the_same_features():
    service, pipeline = make(pipeline=FakePipeline(fail_with_prior=True))
    first = run_one(service, image(), 1_000)
    assert first.pose_verified and first.level == Level.OK and first.values["pose_published"] == "True"
    second = run_one(service, image(), 2_000)  # tracking prior fails, the retry succeeds
    assert second.pose_verified
    assert second.values["retrieval_prior"] == "retrieval (tracking prior failed)"
    assert pipeline.calls == [False, True, False] and pipeline.passes == 2
    assert service.counters.poses_published == 2


def test_reasons_a_frame_got_no_pose():
    service, _ = make()
    stale = run_one(service, image(), 0)
    assert stale.counter == "frames_stale" and "header stamp is zero" in stale.message
    bad = run_one(service, "weird8", 1_000)
    assert bad.counter == "frames_bad_input" and "weird8" in bad.message
    wrong_size = run_one(service, np.zeros((10, 10, 3), np.uint8), 2_000)
    assert "10x10" in wrong_size.message and wrong_size.level == Level.WARN
    failed = run_one(service, image(BLACK), 3_000)
    assert failed.counter == "localization_failures" and not failed.pose_verified
    assert "too few inliers" in failed.message and failed.values["pose_published"] == "False"
    again = run_one(service, image(BLACK), 4_000)
    assert not again.log  # the same message within a few seconds is not logged twice
    c = service.counters
    assert (c.frames_stale, c.frames_bad_input, c.localization_failures, c.poses_published) \
        == (1, 2, 2, 0)
    service.set_camera(None, "invalid CameraInfo: fx is nan")
    no_camera = run_one(service, image(), 5_000)
    assert "fx is nan" in no_camera.message


def test_old_images_are_skipped():
    service, _ = make(max_image_age_s=0.5)
    old = run_one(service, image(), 10**12 - 10**9)  # 1 s before the clock's now
    assert old.counter == "frames_stale" and "1.00 s old" in old.message


def test_a_failed_reload_keeps_serving_the_old_map():
    state = {"fail": False}
    pipeline = FakePipeline()

    def factory(map_dir, *_):
        if state["fail"]:
            raise MapFormatError(f"no map at {map_dir}: manifest.json is missing")
        return pipeline
    service, _ = make(factory=factory)
    state["fail"] = True
    service.update({"map_dir": "/other/map"})
    ok, message = service.load_map()
    assert not ok and "still serving map '/fake/map'" in message
    level, text, values = service.diagnostics()
    assert level == Level.ERROR and values["map_in_use"] == "/fake/map"
    assert run_one(service, image(), 1_000).pose_verified  # the old map still localizes
    service.release()
    assert run_one(service, image(), 2_000).message.startswith("no map loaded")


def test_time_budget_follows_the_median_pipeline_time():
    service, pipeline = make(latency_budget_factor=2.0)
    for i in range(7):
        run_one(service, image(), 1_000 * (i + 1))
    assert pipeline.budgets == [None] * 5 + [20.0, 20.0]
    service.update({"time_budget_ms": 300.0})  # the localizer's own budget wins
    run_one(service, image(), 9_000)
    assert pipeline.budgets[-1] is None


def test_one_shot_mode_waits_for_the_trigger():
    service, _ = make(continuous=False)
    service.offer(image(), 1_000)
    got = []
    thread = threading.Thread(target=lambda: got.append(service.next_frame()))
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive()  # not armed: waiting
    service.arm()
    thread.join(timeout=5)
    assert got and got[0].stamp_ns == 1_000


def test_worker_thread_hands_every_outcome_over():
    service, _ = make()
    outcomes = []
    done = threading.Event()

    def on_outcome(outcome):
        outcomes.append(outcome)
        if len(outcomes) == 2:
            done.set()
    service.start(decode, on_outcome)
    try:
        service.offer(image(), 1_000)
        assert wait_for(lambda: service.counters.frames_processed == 1)
        service.offer(image(BLACK), 2_000)
        assert done.wait(10)
    finally:
        service.stop()
    assert [o.pose_verified for o in outcomes] == [True, False]
    level, message, values = service.diagnostics()
    assert level == Level.WARN and values["frames_processed"] == "2"




def test_refused_options_are_named():
    from ros2_s2dhm.options import OptionError

    with pytest.raises(OptionError, match="top_k"):
        LocalizationService(ServiceConfig(), {"top_k": 0}, lambda *a: None)


def test_lost_frames_are_estimated_only_from_regular_stamps():
    service, _ = make()
    for stamp in (1_000, 2_000, 3_000, 6_000, 7_000):  # 4000 and 5000 never arrived
        service.offer(image(), stamp)
    assert service.counters.frames_lost == 2
    assert service.diagnostics()[2]["frames_lost"] == "2"
    jittery, _ = make()
    for stamp in (1_000, 2_400, 3_100, 4_700, 5_300, 6_900, 7_500):  # software stamps
        jittery.offer(image(), stamp)
    assert jittery.diagnostics()[2]["frames_lost"].startswith("unknown (header stamps")
