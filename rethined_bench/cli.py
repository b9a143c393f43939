"""``rbench``: models, devices, doctor, export, run, report, ingest, merge, check.

User errors (unknown names, unsupported sizes, missing dependencies, unreachable devices, corrupt artifacts) print
one line and exit with code 2.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Column

from .backends import target_names
from .errors import RbenchError
from .gate import check

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export inpainting networks per vendor and benchmark them (RETHINED, MI-GAN, CoordFill).")
console = Console()
err_console = Console(stderr=True)

ProfilesOption = Annotated[Optional[Path], typer.Option("--profiles", help="Extra device profiles directory "
                                                        "(or RBENCH_PROFILES).")]
DbOption = Annotated[Path, typer.Option("--db", help="Results database (SQLite).")]
OptionOption = Annotated[Optional[list[str]], typer.Option("--option", help="key=value keyword option of a user "
                                                           "model (module:callable); repeatable.")]


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (stable keys) on stdout instead of a table.")]
RES_HELP = "Resolution: N (square) or HxW (height x width, e.g. 1024x576); repeatable."
_RESOLUTION = re.compile(r"([1-9][0-9]*)(?:x([1-9][0-9]*))?", re.IGNORECASE)


def parse_resolution(text: str) -> tuple[int, int]:
    """A ``--res`` value as (height, width): ``N`` is square, ``HxW`` is H by W; anything else is a user error."""
    match = _RESOLUTION.fullmatch(text.strip())
    if not match:
        raise RbenchError(f"--res {text!r} is not a resolution: give N (square) or HxW (height x width), e.g. 1024 "
                          "or 1024x576")
    height = int(match[1])
    return height, int(match[2] or height)


def _accepted_sizes(models: list[str], values: list[str]) -> list[tuple[int, int]]:
    """Parse ``--res`` values and check that every model takes every size, before anything is exported."""
    from .errors import UnsupportedResolutionError
    from .models import get_model_spec

    sizes = [parse_resolution(value) for value in values]
    for name in models:
        constraint = get_model_spec(name).constraint
        for height, width in sizes:
            try:
                constraint.check(height, width)
            except UnsupportedResolutionError as exc:
                raise UnsupportedResolutionError(f"{name}: {exc}") from None
    return sizes


@app.command()
def models(
    name: Annotated[Optional[str], typer.Argument(metavar="NAME", help="One model in full: summary, variants with "
                                                  "their parameter counts, accepted resolutions, limits, the paper's "
                                                  "numbers.")] = None,
    json_output: JsonOption = False,
) -> None:
    """List registered models with their variants, parameter counts and accepted resolutions (or one in full)."""
    from .listings import model_detail, model_info, models_table
    from .models import list_models

    if name:
        return _show(model_info(name, detail=True), json_output, model_detail)
    _show([model_info(model) for model in list_models()], json_output,
          lambda rows: [models_table(rows, console.width)], "rbench models NAME: one model in full")


@app.command()
def devices(
    name: Annotated[Optional[str], typer.Argument(metavar="NAME", help="One device in full: its settings with "
                                                  "their sources, ceilings, paper numbers, reachability, fix.")] = None,
    json_output: JsonOption = False,
    profiles: ProfilesOption = None,
) -> None:
    """List device profiles: runner, target, precision, and whether rbench can reach the device from here (or one
    device in full)."""
    from .devices import get_profile, load_profiles
    from .listings import device_detail, device_info, devices_table

    if name:
        return _show(device_info(get_profile(name, profiles), detail=True), json_output, device_detail)
    _show([device_info(profile) for profile in load_profiles(profiles).values()], json_output,
          lambda rows: [devices_table(rows, console.width)],
          "rbench devices NAME: one device in full; rbench doctor: what to do")


def _show(data: Any, json_output: bool, render: Callable[[Any], list[Any]], hint: str | None = None) -> None:
    """A listing or detail view: its data as JSON on stdout, or rendered for the terminal (with a dim hint)."""
    from .listings import print_all, print_json

    if json_output:
        print_json(data)
        return
    print_all(console, render(data))
    if hint:
        console.print(f"[dim]{hint}[/]")


@app.command()
def doctor(json_output: JsonOption = False, profiles: ProfilesOption = None) -> None:
    """Check each runner's requirements on this machine, for each device it serves, and say what to do: one line
    per runner and device, then each reason in full with its fix."""
    from .devices import load_profiles
    from .listings import doctor_report, doctor_rows

    _show(doctor_rows(load_profiles(profiles).values()), json_output, lambda rows: doctor_report(rows, console.width))


@app.command()
def export(
    target: Annotated[str, typer.Option(help=f"Export target: {', '.join(target_names())} (its settings' "
                                              "defaults, or the --device profile's).")] = "onnx",
    model: Annotated[list[str], typer.Option("--model", help="Model name (repeatable).")] = ["rethined"],
    res: Annotated[list[str], typer.Option("--res", metavar="N|HxW", help=RES_HELP)] = ["1024"],
    variant: Annotated[Optional[str], typer.Option(help="Model variant (default: the model's first).")] = None,
    option: OptionOption = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or fp16 (default: the device's, else the target's: "
                                                          "fp32 for onnx, fp16 for coreml).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Take target settings from this device profile.")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default 18; 13 for TensorRT 8.2).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Checkpoint to load (strict).")] = None,
    out: Annotated[Path, typer.Option(help="Artifacts directory.")] = Path("artifacts"),
    parity: Annotated[bool, typer.Option(help="Check the artifact against PyTorch fp32 where it can run here.")] = True,
    profiles: ProfilesOption = None,
) -> None:
    """Export deploy-ready artifacts (one per model × resolution) with a manifest each.

    --model also takes your own model as module:callable (returning an nn.Module with forward(image, mask)), with
    keyword options from --option key=value.
    """
    from exporters import ExportRequest, export as export_artifact

    from .models.user import option_variant, parse_options

    from .backends import create_exporter, export_options, local_runner
    from .devices import get_profile

    options = {}
    if device:
        profile = get_profile(device, profiles)
        options = export_options(profile)
        target, precision = profile.target, precision or profile.precision
    if opset is not None:
        options["opset"] = opset
    exporter = create_exporter(target)
    parity_runner = local_runner(target) if parity else None
    sizes = _accepted_sizes(model, res)
    for name in model:
        chosen = option_variant(name, parse_options(option)) if option else variant
        for height, width in sizes:
            request = ExportRequest(name, height, width, target, variant=chosen,
                                    precision=precision or exporter.precisions[0],
                                    weights=str(weights) if weights else None, options=options, device=device)
            artifact = export_artifact(request, exporter, out, parity_runner=parity_runner,
                                       check_parity_here=parity)
            check = artifact.manifest.get("parity", {})
            detail = (f"max abs error {check['max_abs_error']:.2e}" if "max_abs_error" in check
                      else check.get("reason", "parity not checked"))
            console.print(f"{artifact.path}  ({artifact.manifest['size_bytes'] / 2**20:.1f} MiB, {detail})")


@app.command()
def run(
    device: Annotated[str, typer.Option(help="Device profile name (see `rbench devices`).")] = "host-cpu",
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Model (repeatable; default: the "
                                                        "RETHINED paper's; 'all': every registered model).")] = None,
    res: Annotated[Optional[list[str]], typer.Option("--res", metavar="N|HxW", help=f"{RES_HELP} Default: "
                                                     "1024, 2048, 4096.")] = None,
    variant: Annotated[Optional[list[str]], typer.Option("--variant", help="Variant (default: all).")] = None,
    option: OptionOption = None,
    artifact: Annotated[Optional[list[Path]], typer.Option("--artifact", help="Measure this ONNX file as it is, "
                                                           "not an rbench export (repeatable).")] = None,
    db: DbOption = Path("results/rbench.sqlite"),
    artifacts: Annotated[Path, typer.Option(help="Artifacts directory.")] = Path("artifacts"),
    force: Annotated[bool, typer.Option(help="Measure cells already stored for the same artifact.")] = False,
    processes: Annotated[int, typer.Option(help="Fresh processes per cell.")] = 3,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per process.")] = 1,
    min_iters: Annotated[int, typer.Option(help="Minimum timed iterations per process.")] = 5,
    min_time: Annotated[float, typer.Option(help="Minimum timed seconds per process.")] = 1.0,
    max_time: Annotated[float, typer.Option(help="Cap on timed seconds per process.")] = 30.0,
    detach: Annotated[bool, typer.Option(help="Hosted devices (AI Hub): submit every cell's jobs and return; a "
                                              "later `rbench run` collects them.")] = False,
    profiles: ProfilesOption = None,
) -> None:
    """Measure every selected (model, variant, resolution) cell on a device and store the results.

    Exits 1 when a cell failed (each is stored with its reason and listed); cells a model declares unsupported are
    stored as such and are not failures. On a hosted device (AI Hub) every cell's jobs are submitted first and
    polled together; job ids are stored at once, so an interrupted or --detach'ed run is finished by the next one,
    which re-attaches to them instead of submitting again. --artifact measures files rbench did not export (their
    inputs, shapes and graph read from the file), stored under the file's stem and sha256.
    """
    from .devices import get_profile
    from .listings import fit
    from .measure.protocol import Protocol
    from .models import BENCH_RESOLUTIONS, get_model_spec, sweep_models
    from .models.user import option_variant, parse_options
    from .store import ResultStore
    from .sweep import Cell, Sweep

    profile = get_profile(device, profiles)
    try:
        protocol = Protocol(processes=processes, warmup=warmup, min_iters=min_iters, min_time_s=min_time,
                            max_time_s=max_time)
    except ValueError as exc:
        raise RbenchError(str(exc)) from exc
    if artifact and (model or res or variant or option):
        raise RbenchError("--artifact measures the files given; --model, --res, --variant and --option choose "
                          "models for rbench to export")
    # a size a model declares it cannot take is stored as an unsupported cell, like the paper's "-"
    sizes = [parse_resolution(value) for value in res] if res else [(size, size) for size in BENCH_RESOLUTIONS]
    cells = []
    for name in [] if artifact else sweep_models(model):
        spec = get_model_spec(name)
        chosen = [option_variant(name, parse_options(option))] if option else variant
        for var in chosen or list(spec.benchmark_variants):
            spec.variant_options(var)
            cells += [Cell(name, var, height, width) for height, width in sizes]
    sweep = Sweep(profile, ResultStore(db), protocol, artifacts, force=force)
    if detach and not sweep.hosted:
        raise RbenchError(f"--detach is for hosted devices; {profile.name} runs while rbench waits")
    sweep.check_runner()
    work = [lambda path=path: sweep.run_artifact(path) for path in artifact or []] or [
        lambda cell=cell: sweep.run_cell(cell) for cell in cells]
    counts = {"ok": 0, "failed": 0, "unsupported": 0, "skipped": 0, "submitted": 0}
    columns = (TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
               BarColumn(bar_width=None),  # the room the other columns leave
               *(kind(table_column=Column(no_wrap=True))
                 for kind in (MofNCompleteColumn, TimeElapsedColumn, TimeRemainingColumn)))
    # what the description may take on one line: the counts, two clocks, four gaps and a bar of at least 11 cells
    room = max(console.width - 2 * len(str(len(work))) - 30, 20)
    # the ETA averages over the whole sweep (cells take minutes: rich's default 30 s window would hold no sample)
    with Progress(*columns, console=console, transient=False, speed_estimate_period=float("inf")) as bar:
        task = bar.add_task(profile.name, total=len(work))
        bar.advance(task, 0)  # a first sample at the start, so the first cell's time counts towards the ETA

        def describe(text: str) -> None:
            bar.update(task, description=escape(fit(text, room)))

        sweep.on_phase = lambda cell, phase: describe(f"{cell.label} · {phase}")

        def report(outcome) -> None:
            counts[outcome.status] += 1
            colour = {"ok": "green", "skipped": "dim", "unsupported": "yellow", "submitted": "cyan"}.get(
                outcome.status, "red")
            bar.console.print(f"[{colour}]{outcome.status:>11}[/] {outcome.cell.label}: {outcome.detail}")
            bar.advance(task)

        def show_jobs(states: dict[str, int]) -> None:
            jobs = ", ".join(f"{count} {state}" for state, count in states.items() if count)
            describe(f"{profile.name} jobs: {jobs or 'collecting'}")

        if sweep.hosted and cells:
            outcomes = sweep.run_jobs(cells, detach=detach, report=report, states=show_jobs)
            for outcome in outcomes[sum(counts.values()):]:  # detached cells, reported once submitted
                report(outcome)
        else:
            outcomes = []
            for measure_one in work:
                outcomes.append(measure_one())
                report(outcomes[-1])
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    if counts["submitted"]:
        console.print(f"{counts['submitted']} cells submitted to {profile.name}; `rbench run` with the same options "
                      "collects them when their jobs end.")
    if counts["skipped"] == len(work):
        console.print(f"Nothing to measure: all {len(work)} cells are already stored in {db} for these artifacts "
                      "and this protocol (use --force to measure again).")
    else:
        console.print(f"{summary}; results in {db}")
    failures = [outcome for outcome in outcomes if outcome.status == "failed"]
    if failures:  # stored with their reasons; the exit status tells scripts and CI (unsupported cells are not failures)
        err_console.print(f"{len(failures)} of {len(work)} cells failed:", markup=False, highlight=False)
        for outcome in failures:
            err_console.print(f"  {outcome.cell.label}: {outcome.detail}", markup=False, highlight=False,
                              soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def report(
    device: Annotated[Optional[str], typer.Option(help="Device (default: every device in the store).")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="markdown, latex, html, json or csv; omit to "
                                                  "print.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (or file, with --device).")] = Path("reports"),
    db: DbOption = Path("results/rbench.sqlite"),
    profiles: ProfilesOption = None,
) -> None:
    """Write the paper-style tables from the results store (or print them).

    With --device: that device's report (Table 3, ratios, load, roofline, plots). Without: Table 2 across every
    device in the store (table2.<ext>) plus each device's report.
    """
    from .devices import get_profile
    from .report.document import device_report, table2_report
    from .report.render import FORMATS, names_file, write_report, write_table2
    from .report.terminal import print_report
    from .store import ResultStore

    if format is not None and format not in FORMATS:
        raise RbenchError(f"unknown format '{format}'; choose one of: {', '.join(FORMATS)}")
    if not db.is_file():
        raise RbenchError(f"no results database at {db}; run `rbench run` first")
    store = ResultStore(db)
    names = [device] if device else store.devices()
    if not names:
        raise RbenchError(f"{db} holds no results yet; run `rbench run` first")
    if device is None and format is not None and names_file(out, format):
        raise RbenchError(f"--out {out} names a file; reporting every device writes several, so give a directory "
                          "(or pass --device)")
    devices = []
    for name in names:
        results = store.latest(name)
        if not results:
            raise RbenchError(f"{db} has no results for device {name}")
        devices.append((get_profile(name, profiles), results))
    if format is None:
        if device is None:
            print_report(console, table2_report(devices, detailed=False))
        for profile, results in devices:
            print_report(console, device_report(profile, results, [], detailed=False))
        return
    if device is None:
        console.print(f"wrote {write_table2(devices, format, out)}")
    for profile, results in devices:
        console.print(f"wrote {write_report(profile, results, format, out)}")


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="CSV or JSON of externally measured cells, trtexec output, an "
                                         "--exportTimes JSON or an ai-hub-models perf.yaml (docs/ingest.md).")],
    db: DbOption = Path("results/rbench.sqlite"),
    profiles: ProfilesOption = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile the trtexec file (or perf.yaml) was "
                                                       "measured on.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model the trtexec file measured (a perf.yaml names its "
                                                      "own).")] = None,
    variant: Annotated[Optional[str], typer.Option(help="Its variant (default: the model's first).")] = None,
    res: Annotated[Optional[int], typer.Option("--res", help="Its square resolution.")] = None,
) -> None:
    """Store numbers measured outside rbench (Xcode's Core ML report, trtexec on a Jetson, AI Hub numbers Qualcomm
    published) with their provenance."""
    from .ingest import CellOptions
    from .ingest import ingest as ingest_file
    from .store import ResultStore

    results = ingest_file(file, ResultStore(db), profiles, CellOptions(device, model, variant, res))
    for result in results:
        first_reason = (result.reason or "").partition("\n")[0]
        outcome = f"{result.latency['median']:.1f} ms" if result.status == "ok" else f"{result.status}: {first_reason}"
        console.print(escape(f"stored {result.device} {result.model}/{result.variant} @{result.height}: {outcome} "
                             f"({result.provenance['tool']})"))


@app.command()
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Results databases to combine (e.g. one per machine); never "
                                                 "written.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Database to merge into (created if missing; "
                                                                "merging into an existing one adds).")],
) -> None:
    """Combine results databases from several machines: each measurement once (the newest copy), every other row
    kept as history (README, "Results from many machines")."""
    from .merge import merge_stores

    summary = merge_stores(inputs, output)
    for item in summary.inputs:
        carried = f", {item.submissions} pending submissions carried over" if item.submissions else ""
        console.print(escape(f"{item.path}: {item.read} rows read, {item.added} added, {item.skipped} duplicates "
                             f"skipped{carried}"), soft_wrap=True)
    console.print(escape(f"{summary.output}: {summary.after} rows ({summary.before} before)"), soft_wrap=True)


app.command()(check)  # the regression gate's command lives in gate.py


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2 (typer's own usage errors too)."""
    try:
        app()
    except RbenchError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
