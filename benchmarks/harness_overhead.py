"""Does rbench's harness change what it measures? rbench's runner vs a bare ONNX Runtime loop, interleaved.

Both sides time the same ONNX artifact with the same session settings (CPU EP, same threads, ORT_ENABLE_ALL,
sequential) in fresh processes, alternating ABAB... so drift on a shared machine hits both equally. The rbench side
is ``rethined_bench.measure.protocol.measure_process`` through the ``local-ort`` runner; the bare side is a plain
``session.run`` loop timed with ``perf_counter``. The goal is a ratio of medians within 3%.

    .venv/bin/python benchmarks/harness_overhead.py                      # exports RETHINED at 1024 if needed
    .venv/bin/python benchmarks/harness_overhead.py --artifact artifacts/rethined_onnx-fp32_1024x1024.onnx
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

BARE_LOOP = """
import json, sys, time
import numpy as np
from rethined_bench.inputs import make_inputs
from rethined_bench.runners.ort import create_session
path, warmup, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
image, mask = make_inputs(*json.load(open(path + ".json"))["resolution"])
feed = {"image": image.numpy(), "mask": mask.numpy()}
session = create_session(path)
for _ in range(warmup + 1):
    session.run(None, feed)
samples = []
for _ in range(iters):
    begin = time.perf_counter()
    session.run(None, feed)
    samples.append((time.perf_counter() - begin) * 1e3)
print(json.dumps(samples))
"""


def bare_process(artifact: Path, warmup: int, iters: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, str(artifact), str(warmup), str(iters)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rbench_process(artifact: Path, warmup: int, iters: int) -> list[float]:
    """One process through the runner interface, exactly as ``rbench run`` measures: prepare, then measure."""
    from rethined_bench.artifact import Artifact
    from rethined_bench.backends import create_runner
    from rethined_bench.measure.protocol import Protocol

    protocol = Protocol(processes=1, warmup=warmup, min_iters=iters, min_time_s=0.0, max_time_s=600.0)
    runner = create_runner("local-ort")
    return runner.measure(runner.prepare(Artifact.load(artifact)), protocol).processes[0].samples_ms


def ensure_artifact(path: Path | None) -> Path:
    if path is not None:
        return path
    from exporters import ExportRequest, export
    from rethined_bench.backends import create_exporter, local_runner

    return export(ExportRequest("rethined", 1024, 1024, "onnx"), create_exporter("onnx"), Path("artifacts"),
                  parity_runner=local_runner("onnx")).path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, help="ONNX artifact with its manifest (default: RETHINED 1024)")
    parser.add_argument("--rounds", type=int, default=6, help="ABAB rounds; each side runs a fresh process per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=8)
    args = parser.parse_args()
    artifact = ensure_artifact(args.artifact)

    medians: dict[str, list[float]] = {"rbench": [], "bare": []}
    started = time.perf_counter()
    for round_index in range(args.rounds):
        order = ("rbench", "bare") if round_index % 2 == 0 else ("bare", "rbench")
        for side in order:
            run = rbench_process if side == "rbench" else bare_process
            medians[side].append(float(np.median(run(artifact, args.warmup, args.iters))))
    ratio = np.median(medians["rbench"]) / np.median(medians["bare"])
    p_value = stats.mannwhitneyu(medians["rbench"], medians["bare"], alternative="two-sided").pvalue
    print(f"artifact: {artifact}  ({args.rounds} rounds × {args.iters} iterations per process, "
          f"{time.perf_counter() - started:.0f} s)")
    print("| side | median of process medians (ms) | min process median (ms) |")
    print("|---|---|---|")
    for side, values in medians.items():
        print(f"| {side} | {np.median(values):.1f} | {min(values):.1f} |")
    verdict = "within" if abs(ratio - 1) <= 0.03 else "OUTSIDE"
    print(f"\nratio rbench/bare = {ratio:.3f} (Mann-Whitney p = {p_value:.2f}); {verdict} the 3% goal")


if __name__ == "__main__":
    main()
