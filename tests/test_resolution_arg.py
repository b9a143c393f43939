"""``--res N`` or ``--res HxW``: one parser for ``rbench export`` and ``rbench run``; non-square cells keep H and W
through export, storage and reports (shown as ``1024x576``); square-only models refuse them in one line.

Most cases run the real entry point (``rethined_bench.cli.main``) in-process, with the export or the measurement
replaced where only the arguments matter; one case runs ``rbench`` as a subprocess, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rethined_bench.cli import main, parse_resolution
from rethined_bench.errors import RbenchError
from rethined_bench.store import Result, ResultStore


def rbench(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``rbench ARGS`` in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rbench", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("text,size", [("1024", (1024, 1024)), ("1024x576", (1024, 576)), ("64X96", (64, 96)),
                                       (" 512 ", (512, 512))])
def test_n_or_h_x_w_is_parsed_as_height_and_width(text, size):
    assert parse_resolution(text) == size


@pytest.mark.parametrize("text", ["1024x", "x576", "0", "1024x0", "-512", "1024x576x3", "1024*576", "big", ""])
def test_a_bad_resolution_is_refused(text):
    with pytest.raises(RbenchError, match="is not a resolution: give N .* or HxW"):
        parse_resolution(text)


@pytest.mark.parametrize("command", ["export", "run"])
def test_a_bad_resolution_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, command):
    monkeypatch.chdir(tmp_path)
    code, _, err = rbench(monkeypatch, capsys, command, "--model", "in2", "--res", "1024x")
    assert code == 2 and "--res '1024x' is not a resolution" in one_line(err)
    assert not list(tmp_path.iterdir())  # nothing exported or stored


def test_a_square_only_model_refuses_a_non_square_export_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rethined_bench.cli", "export", "--model", "rethined", "--res",
                           "2048x1024"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2  # both sides are multiples of 512: only squareness is wrong
    assert "rethined: resolution 2048x1024 is not supported: square (" in one_line(done.stderr)
    assert not (tmp_path / "artifacts").exists()


@pytest.fixture
def exports(monkeypatch):
    """Replace the export driver: record each request and return a stand-in artifact."""
    import exporters

    requests = []

    class Exported:
        def __init__(self, request) -> None:
            self.path = Path(f"{request.model}_{request.height}x{request.width}.onnx")
            self.manifest = {"size_bytes": 1, "parity": {"max_abs_error": 0.0}}

    def export(request, *args, **kwargs):
        requests.append(request)
        return Exported(request)

    monkeypatch.setattr(exporters, "export", export)
    return requests


def test_export_passes_height_and_width_to_the_exporter(monkeypatch, capsys, tmp_path, exports):
    code, out, _ = rbench(monkeypatch, capsys, "export", "--model", "in2", "--res", "1024x576", "--res", "64",
                          "--out", str(tmp_path))
    assert code == 0
    assert [(r.model, r.height, r.width) for r in exports] == [("in2", 1024, 576), ("in2", 64, 64)]
    assert "in2_1024x576.onnx" in out


def test_export_refuses_every_size_before_exporting_any(monkeypatch, capsys, tmp_path, exports):
    code, _, err = rbench(monkeypatch, capsys, "export", "--model", "in2", "--res", "64x96", "--res", "60x96",
                          "--out", str(tmp_path))
    assert code == 2 and "in2: resolution 60x96 is not supported: height and width must be multiples of 8" in \
        one_line(err)
    assert exports == []


def test_run_cells_carry_height_and_width(monkeypatch, capsys, tmp_path):
    from rethined_bench.sweep import CellOutcome, Sweep

    cells = []

    def run_cell(self, cell):
        cells.append(cell)
        return CellOutcome(cell, "ok", "1.0 ms")

    monkeypatch.setattr(Sweep, "run_cell", run_cell)
    code, out, _ = rbench(monkeypatch, capsys, "run", "--model", "in2", "--res", "1024x576", "--db",
                          str(tmp_path / "r.sqlite"), "--artifacts", str(tmp_path / "art"))
    assert code == 0
    assert [(cell.model, cell.size) for cell in cells] == [("in2", (1024, 576))]
    assert "in2/default @1024x576" in out


def test_a_refused_non_square_cell_is_stored_with_its_size_and_reported(monkeypatch, capsys, tmp_path):
    """A square-only model in a sweep: each cell is stored as unsupported (as any size a model declares it cannot
    take), under its height and width, and the report names the size 1024x576."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = rbench(monkeypatch, capsys, "run", "--model", "rethined", "--res", "1024x576", "--db", "r.sqlite")
    assert code == 0 and "2 unsupported" in out
    stored = ResultStore(tmp_path / "r.sqlite").latest("host-cpu")
    assert {(r.height, r.width, r.status) for r in stored} == {(1024, 576, "unsupported")}
    assert all("square" in r.reason for r in stored)
    code, _, _ = rbench(monkeypatch, capsys, "report", "--db", "r.sqlite", "--device", "host-cpu", "--format",
                        "markdown", "--out", "out")
    assert code == 0
    report = (tmp_path / "out" / "host-cpu.md").read_text()
    assert "| rethined | 1024x576 |" in report


def test_report_tables_name_non_square_sizes(tmp_path):
    from rethined_bench.devices import get_profile
    from rethined_bench.report.tables import latency_matrix, ratio_table

    def result(model: str, height: int, width: int, median: float) -> Result:
        return Result(device="host-cpu", runner="local-ort", model=model, variant="default", height=height,
                      width=width, target="onnx", precision="fp32", status="ok",
                      latency={"median": median, "p90": median})

    results = [result("in2", 1024, 576, 5.0), result("in2", 1024, 1024, 9.0)]
    profile = get_profile("host-cpu")
    for table in (latency_matrix([(profile, results)]), ratio_table(profile, results)):
        rows = {tuple(row[:2]) for row in table.rows()}
        assert {("in2", "1024x576"), ("in2", "1024")} <= rows, table.rows()
