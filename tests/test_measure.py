"""Measurement core: statistics on known samples, instability flags, the protocol's stopping rules, work counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rethined_bench as rb
from rethined_bench.measure import memory
from rethined_bench.measure import protocol as protocol_module
from rethined_bench.measure.flops import bytes_moved, flop_counter_gflops, fvcore_macs, work_counts
from rethined_bench.measure.protocol import Protocol, timed_iterations
from rethined_bench.measure.roofline import roofline_floor_ms
from rethined_bench.measure.stats import summarize


def test_statistics_on_known_samples():
    stats = summarize([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    assert stats.n == 10 and stats.processes == 2
    assert stats.median == 5.5 and stats.min == 1 and stats.max == 10 and stats.mean == 5.5
    assert stats.p90 == 9  # nearest rank: ceil(0.9 * 10) = 9th smallest
    assert stats.p99 is None  # fewer than 100 samples
    assert stats.std == pytest.approx(np.std(np.arange(1, 11), ddof=1))
    assert stats.cv == pytest.approx(stats.std / 5.5)
    assert stats.process_medians == [3, 8] and stats.median_of_process_medians == 5.5


def test_p99_needs_a_hundred_samples():
    stats = summarize([list(range(1, 101))])
    assert stats.p99 == 99 and stats.p90 == 90


def test_stable_samples_are_not_flagged():
    stats = summarize([[100.0, 101.0, 99.5, 100.5]] * 3)
    assert not stats.unstable and stats.reasons == []


def test_instability_is_flagged_with_reasons():
    noisy = summarize([[100, 100, 100, 300]])
    assert noisy.unstable
    assert any("CV" in r for r in noisy.reasons) and any("max/median" in r for r in noisy.reasons)
    drifting = summarize([[100, 101, 100], [130, 131, 130]])
    assert any("process medians spread" in r for r in drifting.reasons)


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.step


def test_timed_loop_runs_until_both_min_iters_and_min_time(monkeypatch):
    clock = FakeClock(0.125)
    monkeypatch.setattr(protocol_module.time, "perf_counter", clock)
    samples, capped = timed_iterations(clock.tick, Protocol(min_iters=3, min_time_s=1.0, max_time_s=30))
    assert len(samples) == 8 and not capped  # 8 × 0.125 s reaches 1 s
    clock = FakeClock(0.5)
    monkeypatch.setattr(protocol_module.time, "perf_counter", clock)
    samples, capped = timed_iterations(clock.tick, Protocol(min_iters=5, min_time_s=0.1, max_time_s=30))
    assert len(samples) == 5 and not capped


def test_timed_loop_is_capped_for_very_slow_cells(monkeypatch):
    clock = FakeClock(20.0)  # a 20 s/iteration cell
    monkeypatch.setattr(protocol_module.time, "perf_counter", clock)
    samples, capped = timed_iterations(clock.tick, Protocol(min_iters=5, min_time_s=1.0, max_time_s=30))
    assert len(samples) == 2 and capped
    assert samples == [20000.0, 20000.0]


class TinyNet(nn.Module):
    """conv 3→8 (3×3, pad 1) then linear over channels: MACs are known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(8, 2, 1, bias=False)

    def forward(self, image, mask):
        return self.proj(self.conv(image * (1 - mask)))


def test_flop_counts_of_a_known_network_are_exact():
    net = TinyNet()
    h = w = 32
    macs = (8 * 3 * 9 + 2 * 8) * h * w
    gflops, stages, data_dependent = flop_counter_gflops(net, h, w)
    assert gflops * 1e9 == 2 * macs and not data_dependent
    assert stages["conv"] * 1e9 == 2 * 8 * 3 * 9 * h * w
    gmacs, skipped, _ = fvcore_macs(net, h, w)
    assert round(gmacs * 1e9) == macs
    assert "aten::mul" in skipped or "aten::rsub" in skipped  # fvcore does not count elementwise ops


def test_bytes_estimate_of_a_known_network():
    net = TinyNet()
    h = w = 16
    weights = (8 * 3 * 9 + 2 * 8) * 4
    inputs = (3 + 1) * h * w * 4
    activations = (1 * h * w + 3 * h * w + 8 * h * w + 2 * h * w) * 4  # rsub, mul, conv, proj outputs
    assert bytes_moved(net, h, w) == weights + inputs + 2 * activations


def test_meta_device_counting_reaches_4096_without_memory(rethined_deployed):
    gflops, stages, data_dependent = flop_counter_gflops(rethined_deployed, 4096, 4096)
    assert set(stages) == {"coarse", "npm", "upscaler"} and not data_dependent
    hr_patch_dim = 3 * 64 * 64  # P·s = 8·8 at 4096
    dense_mix = 2 * 4096 * 4096 * hr_patch_dim
    assert stages["upscaler"] * 1e9 >= dense_mix
    assert gflops == pytest.approx(sum(stages.values()))


def test_data_dependent_work_is_counted_on_the_cells_inputs():
    """The compact upscaler multiplies only hole queries by known keys: the meta device cannot run it (nonzero), so
    it is counted on the seeded inputs, and its mixing work is exactly (holes x known) / N² of the dense product."""
    from rethined_bench.inputs import make_inputs

    model = rb.create_model("rethined", "dense", upscale_form="compact")
    counts = work_counts(model, 1024, 1024, fvcore=False)
    static = work_counts(rb.create_model("rethined", "dense"), 1024, 1024, fvcore=False)
    assert counts.data_dependent and not static.data_dependent
    _, mask = make_inputs(1024, 1024)
    hole = torch.nn.functional.max_pool2d(mask, 16).flatten()  # HR patches of P·s = 8·2
    n, holes = hole.numel(), int(hole.sum())
    mix = 2 * 3 * 16 * 16  # FLOPs per (query, key) pair
    saved = (n * n - holes * (n - holes)) * mix
    assert (static.stages["upscaler"]["gflops"] - counts.stages["upscaler"]["gflops"]) * 1e9 == pytest.approx(saved)


def test_roofline_floor_picks_the_binding_ceiling():
    floor = roofline_floor_ms(100.0, 10 * 10**9, {"fp32_gflops": 1000.0, "mem_gbps": 50.0}, "fp32")
    assert floor["bound"] == "memory" and floor["floor_ms"] == pytest.approx(200.0)
    floor = roofline_floor_ms(100.0, 10**6, {"fp16_gflops": 500.0, "mem_gbps": 50.0}, "fp16")
    assert floor["bound"] == "compute" and floor["floor_ms"] == pytest.approx(200.0)
    assert roofline_floor_ms(1.0, 1, {}, "fp32")["floor_ms"] is None


def test_peak_memory_is_this_process_own_not_an_inherited_high_water_mark():
    """A fresh worker must not report its parent's peak: after a reset the peak tracks this process's RSS."""
    ballast = np.ones(300 * 2**20 // 8)  # ~300 MB resident in this process
    del ballast
    assert memory.reset_peak()
    assert memory.peak_mb() < memory.rss_mb() + 100


def test_peak_memory_on_macos_reads_ru_maxrss_in_bytes(monkeypatch):
    """macOS has no /proc and reports ru_maxrss in bytes (Linux: KiB); no reset is possible there."""
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory.resource, "getrusage", lambda who: type("Usage", (), {"ru_maxrss": 3 * 2**30})())
    assert not memory.reset_peak()
    assert memory.peak_mb() == 3 * 1024
    assert memory.rss_mb() > 0  # psutil, not /proc/self/statm
