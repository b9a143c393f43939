"""RETHINED's attention upscaler, before and after: the reference formulation against the form rbench exports.

Both forms compute the same function (``tests/test_rethined.py`` holds them to < 1e-5 at 1024, 2048 and 4096);
they differ in how the high-resolution work is laid out (``rethined_bench.models.rethined.AttentionUpscaling``):

    reference  unshuffle the HR high frequencies into tokens, mix, shuffle back (6-D transposes at 4096²), the
               Gaussian normaliser as two divisions;
    exported   what ``rbench export --target onnx`` builds (``compact``): the hole queries' attention rows only,
               hole patches only, composited and scattered into the input image; ``top1`` reads LR windows and
               each hole patch's source window, ``dense`` multiplies hole queries by known keys.

Both are exported by ``exporters.onnx.export_onnx`` (opset 18, onnxsim) from the deploy form and run on ONNX
Runtime's CPU EP through rbench's ``create_session`` (2 intra-op threads). Timing is interleaved: ``--rounds``
rounds, each running every (variant, resolution) once per form in a fresh process, the order alternating between
rounds; a process loads the session, runs a first inference and one warm-up, then rbench's timed loop (>= 5
iterations and >= 1 s). Reported per cell: the median of process medians per form, the speed-up, the 4096/1024
ratio per form, and each form's roofline floor on this host (``rethined_bench.measure``: fvcore-free work counts of
that form; ceilings measured by ``measure_host_ceilings``).

    .venv/bin/python benchmarks/upscaler_forms.py --rounds 3 [--res 1024 2048 4096] [--workdir /tmp/upscaler]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

FORMS = ("reference", "exported")
VARIANTS = ("top1", "dense")


def form_options(variant: str, form: str) -> dict[str, str]:
    from rethined_bench import get_model_spec

    if form == "reference":
        return {"upscale_form": "reference"}
    return get_model_spec("rethined").form_options(variant, "onnx") or {"upscale_form": "rows"}


def build(variant: str, size: int, form: str, workdir: Path) -> dict[str, Any]:
    """Export one (variant, size, form) once (cached in ``workdir``) with its work counts and its ORT output."""
    path = workdir / f"rethined-{variant}_{form}_{size}.onnx"
    facts_path = path.with_suffix(".json")
    if facts_path.is_file() and path.is_file():
        return json.loads(facts_path.read_text())
    import numpy as np
    import torch

    import rethined_bench as rb
    from exporters.onnx import export_onnx
    from rethined_bench.inputs import make_inputs
    from rethined_bench.measure.flops import work_counts
    from rethined_bench.optimize import deploy
    from rethined_bench.runners.ort import create_session

    options = form_options(variant, form)
    model = deploy(rb.create_model("rethined", variant, **options))
    image, mask = make_inputs(size, size)
    with torch.no_grad():
        export_onnx(model, path, size, size, example=(image, mask))
    output = create_session(path, threads=2).run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
    np.save(path.with_suffix(".npy"), output)
    counts = work_counts(model, size, size, fvcore=False)
    facts = {"options": options, "gflops": counts.gflops, "bytes": counts.bytes}
    facts_path.write_text(json.dumps(facts))
    return facts


def time_process(path: Path, size: int) -> dict[str, float]:
    """One fresh process's timing of one artifact (run as ``--worker``)."""
    import time

    from rethined_bench.inputs import make_arrays
    from rethined_bench.measure.protocol import Protocol, timed_iterations
    from rethined_bench.runners.ort import create_session

    image, mask = make_arrays(size, size)
    inputs = {"image": image, "mask": mask}
    session = create_session(path, threads=2)
    begin = time.perf_counter()
    session.run(None, inputs)
    first_ms = (time.perf_counter() - begin) * 1e3
    session.run(None, inputs)
    samples, _ = timed_iterations(lambda: session.run(None, inputs), Protocol(min_iters=5, min_time_s=1.0,
                                                                               max_time_s=120.0))
    return {"first_ms": first_ms, "median_ms": statistics.median(samples)}


def run_worker(path: Path, size: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--worker", str(path), str(size)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def markdown(results: dict[tuple[str, int, str], list[float]], facts: dict[tuple[str, int, str], dict[str, Any]],
             ceilings: dict[str, Any], sizes: list[int], errors: dict[tuple[str, int], float]) -> str:
    from rethined_bench.measure.roofline import roofline_floor_ms

    lines = ["| variant | res | reference ms | exported ms | speed-up | exported form | max abs diff | "
             "floor ms (ref / exp) | measured / floor (ref / exp) |", "|---|---|---|---|---|---|---|---|---|"]
    medians = {key: statistics.median(values) for key, values in results.items()}
    for variant in VARIANTS:
        for size in sizes:
            ref, new = medians[(variant, size, "reference")], medians[(variant, size, "exported")]
            floors = [roofline_floor_ms(facts[(variant, size, f)]["gflops"], facts[(variant, size, f)]["bytes"],
                                        ceilings, "fp32") for f in FORMS]
            form = facts[(variant, size, "exported")]["options"]["upscale_form"]
            lines.append(
                f"| {variant} | {size} | {ref:.0f} | {new:.0f} | {ref / new:.2f}x | {form} | "
                f"{errors[(variant, size)]:.1e} | {floors[0]['floor_ms']:.0f} ({floors[0]['bound']}) / "
                f"{floors[1]['floor_ms']:.0f} ({floors[1]['bound']}) | {ref / floors[0]['floor_ms']:.1f}x / "
                f"{new / floors[1]['floor_ms']:.1f}x |")
    if min(sizes) != max(sizes):
        lines.append("")
        for variant in VARIANTS:
            ratios = [medians[(variant, max(sizes), f)] / medians[(variant, min(sizes), f)] for f in FORMS]
            lines.append(f"- {variant}: {max(sizes)}/{min(sizes)} latency ratio {ratios[0]:.2f} (reference), "
                         f"{ratios[1]:.2f} (exported)")
    lines.append(f"- host ceilings: {ceilings['fp32_gflops']} GFLOP/s fp32, {ceilings['mem_gbps']} GB/s "
                 f"({ceilings['method']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("ONNX", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--res", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rbench-upscaler-forms"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(time_process(Path(args.worker[0]), int(args.worker[1]))))
        return
    import numpy as np

    from rethined_bench.measure.roofline import measure_host_ceilings

    args.workdir.mkdir(parents=True, exist_ok=True)
    cells = [(variant, size) for variant in VARIANTS for size in args.res]
    facts = {(v, s, f): build(v, s, f, args.workdir) for v, s in cells for f in FORMS}
    errors = {(v, s): float(np.abs(np.load(args.workdir / f"rethined-{v}_reference_{s}.npy")
                                   - np.load(args.workdir / f"rethined-{v}_exported_{s}.npy")).max())
              for v, s in cells}
    results: dict[tuple[str, int, str], list[float]] = {(v, s, f): [] for v, s in cells for f in FORMS}
    for round_index in range(args.rounds):
        order = FORMS if round_index % 2 == 0 else FORMS[::-1]
        for variant, size in cells:
            for form in order:
                path = args.workdir / f"rethined-{variant}_{form}_{size}.onnx"
                results[(variant, size, form)].append(run_worker(path, size))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    print(markdown(results, facts, measure_host_ceilings(), args.res, errors))


if __name__ == "__main__":
    main()
