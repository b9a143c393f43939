"""A hosted cell's phases as a progress display hears them: export, build (the compile job), submit, collect; a
re-attached cell goes from its export's cache check straight to collecting its stored jobs."""

from __future__ import annotations

import pytest

pytest.importorskip("qai_hub", reason="the qai-hub client (extra `qnn`) is not installed")

from fake_aihub import fake_hub_fixture  # noqa: E402,F401  (the fake_hub fixture)

from rethined_bench.devices import get_profile  # noqa: E402
from rethined_bench.measure.protocol import Protocol  # noqa: E402
from rethined_bench.store import ResultStore  # noqa: E402
from rethined_bench.sweep import Cell, Sweep  # noqa: E402

CELL = Cell("rethined", "top1", 512)


def test_a_hosted_cell_is_heard_through_export_build_submit_collect(fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("QAI_HUB_API_TOKEN", "rbench-test-token")
    monkeypatch.setenv("RBENCH_SNAPDRAGON_888_POLL_INTERVAL_S", "0")
    heard: list[str] = []

    def sweep() -> Sweep:
        return Sweep(get_profile("snapdragon-888"), ResultStore(tmp_path / "r.sqlite"),
                     Protocol(processes=1, min_iters=1, min_time_s=0), tmp_path / "art",
                     on_phase=lambda cell, phase: heard.append(phase))

    [submitted] = sweep().run_jobs([CELL], detach=True)
    assert submitted.status == "submitted" and heard == ["export", "build", "submit"]
    heard.clear()
    [collected] = sweep().run_jobs([CELL])  # re-attached: nothing built or submitted again
    assert collected.status == "ok", collected.detail
    assert heard == ["export", "collect"]
