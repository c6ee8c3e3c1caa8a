"""soak's report (the frames-in probe and the latency bounds) from measured numbers."""
from offline_tools.soak import _size, format_report, summarize


def _report(sent, duration_s, received, pipeline_ms=1000.0, latencies=(1.0, 1.1, 1.2)):
    counters = {"frames_received": received, "frames_lost": sent - received,
                "frames_processed": received, "poses_published": len(latencies)}
    rss = [(0.0, 100.0), (90.0, 101.0)]
    return summarize(list(latencies), [pipeline_ms] * 5, rss, counters, sent, duration_s)


def test_frames_in_is_judged_when_sent_slower_than_the_node_localizes():
    slow_ok = _report(sent=20, duration_s=60.0, received=19)
    slow_lost = _report(sent=20, duration_s=60.0, received=9)
    assert slow_ok["frames_in_judged"] and slow_ok["verdict"]["frames_in"]
    assert slow_lost["frames_in_judged"] and not slow_lost["verdict"]["frames_in"]
    assert "bound 95 %" in format_report(slow_lost)
    fast = _report(sent=3000, duration_s=100.0, received=1500)  # 30 Hz into a 1 Hz node
    assert not fast["frames_in_judged"] and fast["verdict"]["frames_in"]
    assert "not judged" in format_report(fast)


def test_latency_bounds_are_relative_to_the_median_pipeline_time():
    good = _report(20, 60.0, 20, latencies=[1.0] * 9 + [1.4])
    assert good["verdict"]["latency_p90"] and good["verdict"]["latency_max"]
    slow_tail = _report(20, 60.0, 20, latencies=[1.0] * 8 + [1.6, 2.6])
    assert not slow_tail["verdict"]["latency_p90"] and not slow_tail["verdict"]["latency_max"]


def test_size_flag():
    assert _size("640x480") == (640, 480)
    for bad in ("640", "0x480", "axb"):
        try:
            _size(bad)
        except Exception as exc:
            assert "--size" in str(exc)
        else:
            raise AssertionError(bad)
