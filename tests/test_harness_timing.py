"""Unit tests of harness.timing: statistics, call counts, interleaving order, timer info."""

from __future__ import annotations

import time

import pytest

from harness.timing import TimingStats, interleaved, measure, stats_from_samples, timer_info


def test_stats_known_values_match_numpy_linear_quantiles() -> None:
    s = stats_from_samples([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.min, s.max, s.mean, s.median) == (1.0, 5.0, 3.0, 3.0)
    assert (s.q1, s.q3, s.iqr, s.rounds) == (2.0, 4.0, 2.0, 5)
    assert s.samples == (5.0, 1.0, 4.0, 2.0, 3.0)  # order of measurement kept
    s4 = stats_from_samples([1.0, 2.0, 3.0, 4.0])
    assert (s4.q1, s4.median, s4.q3) == pytest.approx((1.75, 2.5, 3.25))  # numpy.percentile, linear


def test_stats_single_sample_and_empty() -> None:
    s = stats_from_samples([0.5])
    assert s.min == s.max == s.median == s.q1 == s.q3 == 0.5 and s.iqr == 0.0
    with pytest.raises(ValueError):
        stats_from_samples([])


def test_to_dict_has_every_field_and_raw_samples() -> None:
    d = stats_from_samples([0.1, 0.2, 0.3]).to_dict()
    assert set(d) == {"samples", "min", "max", "mean", "median", "q1", "q3", "iqr", "rounds", "method"}
    assert d["samples"] == [0.1, 0.2, 0.3] and d["rounds"] == 3


def test_measure_counts_calls_setup_and_sync() -> None:
    calls = {"fn": 0, "setup": 0, "sync": 0}

    def fn() -> None:
        calls["fn"] += 1

    def setup() -> None:
        calls["setup"] += 1

    def sync() -> None:
        calls["sync"] += 1

    st = measure(fn, rounds=7, warmup=3, setup=setup, sync=sync)
    assert isinstance(st, TimingStats)
    assert st.rounds == 7 and len(st.samples) == 7
    assert calls["fn"] == 10 and calls["setup"] == 10
    assert calls["sync"] >= 14  # before and after every timed call
    assert all(x >= 0 for x in st.samples)


def test_measure_reads_seconds_and_excludes_setup() -> None:
    st = measure(lambda: time.sleep(0.004), rounds=3, warmup=0, setup=lambda: time.sleep(0.05))
    assert 0.004 <= st.median < 0.05  # setup's 50 ms is not timed; units are seconds


def test_measure_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        measure(lambda: None, rounds=0, warmup=0)
    with pytest.raises(ValueError):
        measure(lambda: None, rounds=1, warmup=-1)


def test_interleaved_rotates_order_each_round() -> None:
    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    res = interleaved(fns, rounds=3, warmup=0)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert set(res) == {"a", "b", "c"} and all(r.rounds == 3 for r in res.values())


def test_interleaved_ratio_is_sane() -> None:
    res = interleaved({"fast": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.006)}, rounds=5, warmup=1)
    assert res["slow"].median > res["fast"].median
    with pytest.raises(ValueError):
        interleaved({}, rounds=1, warmup=0)


def test_timer_info_reports_resolution_and_overhead() -> None:
    info = timer_info(calls=2000)
    assert info["clock"] == "time.perf_counter_ns" and info["monotonic"] is True
    assert 0 < info["measured_resolution_s"] < 1e-3
    assert 0 < info["call_overhead_s"] < 1e-4
    assert info["measure_overhead_s"] >= 0
