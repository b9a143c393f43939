"""Reports from a synthetic store with mixed ok/failed/unsupported cells on two devices and three (+1) models.

Checks the table data against the store, the paper columns, every output format's structure (LaTeX tabular balance,
HTML well-formedness with an embedded PNG, plot files) and the CLI (in-process for every format, one subprocess).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rethined_bench.cli import app
from rethined_bench.devices import get_profile
from rethined_bench.errors import UnknownNameError
from rethined_bench.models import get_model_spec
from rethined_bench.report.render import FORMATS, write_report, write_table2
from rethined_bench.report.tables import device_table, latency_matrix, ratio_table, table2, table3
from rethined_bench.store import Result, ResultStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNREGISTERED = "no-such-model"
# (device, model, resolution) → median ms, or (status, reason) for cells that did not run
CELLS: dict[tuple[str, str, int], float | tuple[str, str]] = {
    ("host-cpu", "rethined", 1024): 120.5, ("host-cpu", "rethined", 2048): 410.25,
    ("host-cpu", "rethined", 4096): 1650.0,
    ("host-cpu", "migan", 1024): 300.0, ("host-cpu", "migan", 2048): 900.0,
    ("host-cpu", "migan", 4096): ("failed", "out of memory at 4096"),
    ("host-cpu", "coordfill", 1024): 700.0, ("host-cpu", "coordfill", 2048): 2100.0,
    ("host-cpu", "coordfill", 4096): ("unsupported", "resolution 4096x4096 is not supported"),
    ("host-cpu", UNREGISTERED, 1024): 50.0,
    ("ipad-pro-m2", "rethined", 1024): 20.0, ("ipad-pro-m2", "rethined", 2048): 40.0,
    ("ipad-pro-m2", "migan", 1024): 1000.0,
    ("ipad-pro-m2", "coordfill", 1024): ("failed", "coremltools: unsupported op fft_rfft2"),
}
UNSTABLE = ("host-cpu", "coordfill", 2048)


def default_variant(model: str) -> str:
    try:
        return get_model_spec(model).default_variant
    except UnknownNameError:  # migan/coordfill before they are registered; the unregistered model always
        return "default"


def make_result(device: str, model: str, res: int, cell: float | tuple[str, str]) -> Result:
    base = dict(device=device, runner="local-ort", model=model, variant=default_variant(model), height=res,
                width=res, target="onnx", precision="fp32", created_at=f"2026-01-0{1 + res // 2048}T00:00:00+00:00")
    if isinstance(cell, tuple):
        return Result(status=cell[0], reason=cell[1], **base)
    gflops = res * res / 1e5
    return Result(
        status="ok", **base,
        latency={"median": cell, "p90": cell * 1.1, "cv": 0.02, "n": 30,
                 "unstable": (device, model, res) == UNSTABLE, "reasons": []},
        load={"cold": 80.0 + cell / 100, "warm": 10.0}, first_inference_ms=cell * 2, peak_memory_mb=512.0,
        work={"params": 4.3e6, "fvcore_gmacs": gflops / 2, "gflops": gflops, "bytes": 2e8},
        roofline={"floor_ms": cell / 4, "bound": "compute"},
        protocol={"processes": 3, "warmup": 1, "min_iters": 5, "min_time_s": 1.0, "max_time_s": 30.0},
        settings={"threads": 2},
        environment={"host": {"cpu": "Test CPU_#1", "usable_cores": 2, "memory_gib": 8, "os": "Linux"},
                     "versions": {"onnxruntime": "1.20"}, "rbench": {"version": "0.1", "git": "abc1234"}},
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "r.sqlite"
    store = ResultStore(path)
    for (device, model, res), cell in CELLS.items():
        store.add(make_result(device, model, res, cell))
    return path


@pytest.fixture(scope="module")
def devices(store_path):
    store = ResultStore(store_path)
    return [(get_profile(name), store.latest(name)) for name in store.devices()]


@pytest.fixture(scope="module")
def written(tmp_path_factory, store_path) -> Path:
    """Every format written through the CLI (in-process) for every device, into one directory."""
    out = tmp_path_factory.mktemp("reports")
    for fmt in FORMATS:
        done = CliRunner().invoke(app, ["report", "--db", str(store_path), "--format", fmt, "--out", str(out)])
        assert done.exit_code == 0, done.output
    return out


def row_of(frame: pd.DataFrame, label: str) -> pd.Series:
    rows = frame[frame[("", "model")] == label]
    assert len(rows) == 1, f"{label} rows: {len(rows)}"
    return rows.iloc[0]


def test_table2_cells_match_the_store_and_the_paper(devices):
    frame = table2(devices, detailed=True).frame
    for (device, model, res), cell in CELLS.items():
        if res != 1024:
            continue
        text = row_of(frame, model)[(device, "latency (ms)")]
        if isinstance(cell, tuple):
            assert text == f"- ({cell[0]}: {cell[1]})" and row_of(frame, model)[(device, "load (ms)")] == "-"
        else:
            assert text.startswith(f"{cell:.1f} (p90 {cell * 1.1:.1f}, CV 2.0%, n=30)")
    assert row_of(frame, "rethined")[("ipad-pro-m2", "paper latency (ms)")] == "17.59"
    assert row_of(frame, "rethined")[("ipad-pro-m2", "paper load (ms)")] == "84.48"
    assert row_of(frame, "migan")[("ipad-pro-m2", "paper latency (ms)")] == "1200.8"
    assert ("host-cpu", "paper latency (ms)") not in frame.columns  # the paper did not measure this machine
    assert row_of(frame, UNREGISTERED)[("ipad-pro-m2", "latency (ms)")] == ""


def test_table3_shows_medians_reasons_unstable_marks_and_paper_columns(devices):
    profile, results = devices[0]
    assert profile.name == "host-cpu"
    frame = table3(results).frame
    assert row_of(frame, "rethined")[("measured", "latency 2048 (ms)")] == "410.2"
    assert row_of(frame, "migan")[("measured", "latency 4096 (ms)")] == "- (failed: out of memory at 4096)"
    assert row_of(frame, "coordfill")[("measured", "latency 4096 (ms)")].startswith("- (unsupported: resolution")
    assert row_of(frame, "coordfill")[("measured", "latency 2048 (ms)")] == "2100.0 †"
    paper = row_of(frame, "rethined")
    assert (paper[("paper (iPad Pro M2)", "latency 1024 (ms)")], paper[("paper (iPad Pro M2)", "latency 2048 (ms)")],
            paper[("paper (iPad Pro M2)", "params (M)")]) == ("17.59", "34.33", "4.3")
    unregistered = row_of(frame, UNREGISTERED)
    assert unregistered[("measured", "latency 1024 (ms)")] == "50.0"
    assert all(unregistered[column] == "" for column in frame.columns if column[0].startswith("paper"))


def test_ratios_compare_with_rethined_and_with_the_paper(devices):
    profile, results = devices[1]
    assert profile.name == "ipad-pro-m2"
    frame = ratio_table(profile, results).frame
    migan = frame[(frame[("", "model")] == "migan") & (frame[("", "resolution")] == "1024")].iloc[0]
    assert migan[("measured", "÷ rethined")] == f"{1000.0 / 20.0:.2f}×"
    assert migan[("paper", "÷ rethined")] == f"{1200.8 / 17.59:.2f}×"
    assert migan[("", "measured ÷ paper")] == f"{1000.0 / 1200.8:.2f}×"
    rethined_2048 = frame[(frame[("", "model")] == "rethined") & (frame[("", "resolution")] == "2048")].iloc[0]
    assert rethined_2048[("paper", "latency (ms)")] == "34.33"  # Table 1/3 on the paper's own device
    coordfill = frame[frame[("", "model")] == "coordfill"].iloc[0]
    assert coordfill[("measured", "÷ rethined")] == "" and coordfill[("paper", "÷ rethined")] == "5.13×"


def test_latency_matrix_groups_backend_device_precision(devices):
    frame = latency_matrix(devices).frame
    host, ipad = "onnx → host-cpu → fp32", "coreml → ipad-pro-m2 → fp16"
    assert (host, "paper (ms)") not in frame.columns
    rows = frame.set_index([("", "model"), ("", "resolution")])
    assert rows.loc[("rethined", "2048"), (host, "median ms (p90)")] == "410.2 (451.3)"
    assert rows.loc[("rethined", "2048"), (ipad, "paper (ms)")] == "34.33"
    assert rows.loc[("migan", "4096"), (host, "median ms (p90)")] == "- (failed: out of memory at 4096)"
    assert rows.loc[("coordfill", "2048"), (host, "median ms (p90)")] == "2100.0 (2310.0) †"
    assert rows.loc[("migan", "4096"), (ipad, "median ms (p90)")] == ""


def test_device_table_has_the_ai_hub_columns(devices):
    profile, results = devices[1]
    frame = device_table(profile, results).frame
    assert len(frame) == 4 and set(frame[("", "chipset")]) == {"M2"}
    assert set(frame[("", "target runtime")]) == {"onnx (local-ort)"}  # what the cell says, not the profile
    assert list(frame[("", "inference time (ms)")])[0].startswith("- (failed: coremltools")


def test_every_format_writes_table2_and_each_device(written):
    for fmt, ext in (("markdown", "md"), ("json", "json"), ("csv", "csv"), ("latex", "tex"), ("html", "html")):
        for name in ("table2", "host-cpu", "ipad-pro-m2"):
            assert (written / f"{name}.{ext}").stat().st_size > 0, (fmt, name)


def test_markdown_keeps_its_sections_and_links_the_plots(written):
    text = (written / "host-cpu.md").read_text()
    for heading in ("## Table 3", "## Ratios", "## Load time and memory", "## Roofline", "## Plots"):
        assert heading in text
    assert "**Settings.**" in text and "abc1234" in text and "Test CPU_#1" in text
    assert "| migan | 300.0 (p90 330.0, CV 2.0%, n=30) |" in text
    for link in re.findall(r"\]\(([^)]+\.(?:png|svg))\)", text):
        assert (written / link).is_file()
    assert "(host-cpu/latency_vs_resolution.png)" in text
    table2_md = (written / "table2.md").read_text()
    assert "ipad-pro-m2: paper latency (ms)" in table2_md and "17.59" in table2_md
    assert "- (failed: coremltools: unsupported op fft_rfft2)" in table2_md


def test_plots_are_valid_png_and_svg(written):
    for name in ("latency_vs_resolution", "latency_vs_flops", "measured_vs_roofline"):
        assert (written / "host-cpu" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
        root = ET.parse(written / "host-cpu" / f"{name}.svg").getroot()
        assert root.tag.endswith("svg")


def _cells(row: str) -> int:
    """Columns a LaTeX row spans (``\\multicolumn{n}`` counts n)."""
    cells = row.split(" & ")
    spans = [int(m.group(1)) if (m := re.match(r"\\multicolumn\{(\d+)\}", c.strip())) else 1 for c in cells]
    return sum(spans)


@pytest.mark.parametrize("name", ["table2", "host-cpu", "ipad-pro-m2"])
def test_latex_is_structurally_sound(written, name):
    text = (written / f"{name}.tex").read_text()
    assert text.count(r"\begin{document}") == text.count(r"\end{document}") == 1
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") >= 1
    assert text.count(r"\begin{table}") == text.count(r"\end{table}")
    assert text.count("{") - text.count(r"\{") == text.count("}") - text.count(r"\}")
    for block in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", text, re.S):
        spec, body = block
        assert body.count(r"\toprule") == body.count(r"\midrule") == body.count(r"\bottomrule") == 1
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert len(rows) >= 3 and all(_cells(row[:-2]) == len(spec) for row in rows), rows
    assert "17.59" in (written / "table2.tex").read_text()
    assert r"Test CPU\_\#1" in text  # the footer's host name, escaped


def test_html_is_well_formed_and_embeds_the_plots(written):
    for name in ("table2", "host-cpu"):
        text = (written / f"{name}.html").read_text()
        root = ET.fromstring(text.removeprefix("<!DOCTYPE html>\n"))
        assert root.tag == "html" and root.find(".//table") is not None
        assert not re.search(r"(src|href)=\"(?!data:)", text)  # self-contained
    root = ET.fromstring((written / "host-cpu.html").read_text().removeprefix("<!DOCTYPE html>\n"))
    images = root.findall(".//img")
    assert len(images) == 3
    assert base64.b64decode(images[0].get("src").split(",", 1)[1]).startswith(PNG_SIGNATURE)
    headers = [th.text for th in root.findall(".//table[@id='table3']/thead/tr/th")]
    assert "paper (iPad Pro M2)" in headers and "latency 1024 (ms)" in headers


def test_json_and_csv_hold_the_table_data(written):
    tables = json.loads((written / "table2.json").read_text())["tables"]
    assert [table["key"] for table in tables] == ["table2", "latency"]
    assert ["ipad-pro-m2", "paper latency (ms)"] in tables[0]["columns"]
    device = json.loads((written / "host-cpu.json").read_text())
    assert len(device["results"]) == 10 and {t["key"] for t in device["tables"]} >= {"table3", "ratios"}
    frame = pd.read_csv(written / "table2.csv", dtype=str, keep_default_na=False)
    assert frame.set_index("model").loc["rethined", "ipad-pro-m2: paper latency (ms)"] == "17.59"


def test_terminal_prints_the_tables(store_path):
    done = CliRunner().invoke(app, ["report", "--db", str(store_path)], env={"COLUMNS": "400"})
    assert done.exit_code == 0, done.output
    assert "Table 2" in done.output and "Table 3" in done.output and "17.59" in done.output


def test_device_report_to_a_file_path(devices, tmp_path):
    profile, results = devices[0]
    path = write_report(profile, results, "latex", tmp_path / "x" / "mine.tex")
    assert path == tmp_path / "x" / "mine.tex" and (tmp_path / "x" / "host-cpu" / "latency_vs_flops.png").is_file()
    assert write_table2(devices, "markdown", tmp_path).name == "table2.md"


def rbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rethined_bench.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_subprocess_writes_markdown_and_rejects_a_bad_format(store_path, tmp_path):
    done = rbench("report", "--db", str(store_path), "--device", "host-cpu", "--format", "markdown", "--out",
                  "reports", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reports" / "host-cpu.md").is_file()
    bad = rbench("report", "--db", str(store_path), "--format", "docx", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: unknown format 'docx'; choose one of: markdown, json, csv, latex, html"]


def test_terminal_prints_reasons_literally():
    from rich.console import Console

    from rethined_bench.report.terminal import rich_table

    failed = make_result("host-cpu", "migan", 1024, ("failed", "input shape [1, 3] rejected"))
    console = Console(width=300, record=True)
    console.print(rich_table(table3([failed])))
    assert "input shape [1, 3] rejected" in console.export_text()


def test_the_models_own_papers_sit_beside_our_cells_at_their_resolution(devices):
    """HiFill's Table 2 (GTX 1080 Ti, 512 to 4096) and IN2's Table 9 (RTX 4090, 512) for the models measured here,
    each next to our cell at that size; a device that measured none of them gets no such table."""
    from rethined_bench.report.tables import source_papers_table

    results = [make_result("host-cpu", "hifill", 1024, 250.0), make_result("host-cpu", "coordfill", 512, 90.0)]
    frame = source_papers_table(results).frame
    hifill = frame[frame[("", "model")] == "hifill"]
    assert list(hifill[("paper", "resolution")]) == ["512", "1024", "2048", "4096"]
    assert list(hifill[("paper", "as printed")]) == ["25 ms", "31 ms", "37 ms", "87.3 ms"]
    assert set(hifill[("paper", "hardware")]) == {"GTX 1080 Ti"}
    assert list(hifill[("measured", "latency at that resolution (ms)")]) == ["", "250.0", "", ""]
    coordfill = row_of(frame, "coordfill")
    assert (coordfill[("paper", "source")], coordfill[("paper", "as printed")],
            coordfill[("measured", "latency at that resolution (ms)")]) == ("IN2, Table 9", "10 ms", "90.0")
    assert source_papers_table(devices[0][1]) is None or "hifill" not in set(
        source_papers_table(devices[0][1]).frame[("", "model")])
