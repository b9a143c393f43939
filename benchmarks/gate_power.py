"""Power of the regression gate on this machine, in one run: false alarms, detection, exact-mode catch.

Builds a small synthetic inpainting-shaped ONNX artifact (inputs ``image``/``mask``, output ``inpainted``; a chain of
equal 3×3 convolutions), then two edited copies, each with its own derived manifest:

* **slowed**: a side branch repeats ``extra`` of the chain's convolutions on a hidden activation; its channel mean,
  multiplied by 0, is added to the output. Same output, ≈ extra / convs more work (2 of 8 → ≈ 25%).
* **structural**: one extra ``Identity`` before the output. No latency change; only exact mode can see it.

It then runs, through the gate's own functions and real fresh worker processes:

1. one A/B check against the slowed copy: the latency verdict alone (exact mode is reported separately);
2. ``--trials`` A/A checks (artifact against itself): counts failures (must be 0) and warnings, and reports the
   calibration (the A/A p99 resolvable slowdown) of each trial;
3. exact mode against the structural copy.

Run: ``.venv/bin/python benchmarks/gate_power.py [--trials 10] [--processes 6]`` (about 12 worker processes per
trial; each worker is a fresh Python that imports torch, so a trial takes tens of seconds on a 2-core host).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporters.onnx import graph_statistics, onnx_graph
from rethined_bench.artifact import Artifact, manifest_path_for, sha256_of, size_of
from rethined_bench import gate
from rethined_bench.measure.protocol import Protocol

SIZE, CHANNELS, CONVS, OPSET = 128, 16, 8, 18
IR_VERSION = 9  # onnxruntime reads up to a given IR version; 9 is what opset 18 needs


def build_base(path: Path, seed: int = 0) -> Artifact:
    """The synthetic artifact: concat(image, mask) → stem conv → CONVS × (3×3 conv + Relu) → head conv → Sigmoid."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], [helper.make_node("Concat", ["image", "mask"], ["x"], axis=1)]

    def conv(name: str, source: str, cin: int, cout: int, target: str) -> None:
        weight = (rng.standard_normal((cout, cin, 3, 3)) * (1.0 / np.sqrt(cin * 9))).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"{name}_w"))
        nodes.append(helper.make_node("Conv", [source, f"{name}_w"], [target], pads=[1, 1, 1, 1], name=name))

    conv("stem", "x", 4, CHANNELS, "h0")
    for index in range(CONVS):
        conv(f"conv{index}", f"h{index}", CHANNELS, CHANNELS, f"c{index}")
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"h{index + 1}"]))
    conv("head", f"h{CONVS}", CHANNELS, 3, "logits")
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["inpainted"]))
    graph = helper.make_graph(
        nodes, "synthetic_inpaint",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("inpainted", TensorProto.FLOAT, [1, 3, SIZE, SIZE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    params = sum(int(np.prod(t.dims)) for t in inits)
    macs = SIZE * SIZE * 9 * (4 * CHANNELS + CONVS * CHANNELS * CHANNELS + CHANNELS * 3)
    manifest = {"name": path.stem, "file": path.name, "model": "synthetic", "variant": f"conv{CONVS}",
                "target": "onnx", "precision": "fp32", "resolution": [SIZE, SIZE],
                "params": {"train": params, "deploy": params},
                "work": {"params": params, "fvcore_gmacs": macs / 1e9}}
    return write_manifest(path, manifest)


def write_manifest(path: Path, manifest: dict[str, Any]) -> Artifact:
    """Write ``path``'s manifest (the exporters.base layout): sha256, size and ONNX op histogram of the file."""
    manifest = manifest | {"name": path.stem, "file": path.name, "sha256": sha256_of(path),
                           "size_bytes": size_of(path), "onnx": graph_statistics(path), "graph": onnx_graph(path)}
    manifest_path_for(path).write_text(json.dumps(manifest, indent=2) + "\n")
    return Artifact.load(path)


def derive(source: Artifact, model: onnx.ModelProto, path: Path) -> Artifact:
    """Save an edited graph beside ``source`` with a manifest derived from the source's.

    ``work`` (params, fvcore GMACs) is dropped: it is counted on the PyTorch module, which an edited graph no
    longer matches; exact mode then compares what the file itself says (op counts, node count, size).
    """
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    manifest = {k: v for k, v in source.manifest.items() if k not in ("work", "onnx", "sha256", "size_bytes")}
    return write_manifest(path, manifest)


def slowed_copy(source: Artifact, path: Path, extra: int) -> Artifact:
    """Repeat ``extra`` of the chain's convolutions on a side branch whose result enters the output as 0·x."""
    model = onnx.load(str(source.path))
    graph = model.graph
    weight = next(n for n in graph.node if n.name == "conv0").input[1]
    source_name = "h1"
    for index in range(extra):
        graph.node.append(helper.make_node("Conv", [source_name, weight], [f"side{index}"], pads=[1, 1, 1, 1]))
        source_name = f"side{index}"
    graph.initializer.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
    output = next(n for n in graph.node if "inpainted" in n.output)
    output.output[0] = "main_out"
    graph.node.extend([
        helper.make_node("ReduceMean", [source_name], ["side_mean"], keepdims=1),
        helper.make_node("Mul", ["side_mean", "zero"], ["side_zero"]),
        helper.make_node("Add", ["main_out", "side_zero"], ["inpainted"]),
    ])
    return derive(source, model, path)


def structural_copy(source: Artifact, path: Path) -> Artifact:
    """The same graph plus one Identity before the output: a one-node structural change."""
    model = onnx.load(str(source.path))
    output = next(n for n in model.graph.node if "inpainted" in n.output)
    output.output[0] = "pre_identity"
    model.graph.node.append(helper.make_node("Identity", ["pre_identity"], ["inpainted"]))
    return derive(source, model, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="A/A trials")
    parser.add_argument("--processes", type=int, default=gate.DEFAULT_PROCESSES, help="processes per side")
    parser.add_argument("--extra", type=int, default=2, help="convolutions repeated in the slowed copy")
    args = parser.parse_args()
    config = gate.GateConfig()
    protocol = Protocol(processes=1, warmup=1, min_iters=5, min_time_s=0.3, max_time_s=10.0)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp) / "base.onnx")
        slow = slowed_copy(base, Path(tmp) / "slowed.onnx", args.extra)
        extra_node = structural_copy(base, Path(tmp) / "structural.onnx")
        slowed = gate.compare_pair(gate.Pair("A/B slowed", base, slow), config, args.processes, protocol,
                                   gate.measure_in_worker, None)
        print(f"A/B slowed (+{args.extra}/{CONVS} convs): ratio {slowed.ratio:.3f} CI [{slowed.ci[0]:.3f}, "
              f"{slowed.ci[1]:.3f}] p={slowed.p_slower:.3g} → {slowed.verdict} {slowed.note}", flush=True)

        pair, verdicts, resolvable = gate.Pair("A/A", base, base), [], []
        for trial in range(args.trials):
            result = gate.compare_pair(pair, config, args.processes, protocol, gate.measure_in_worker, None)
            verdicts.append(result.verdict)
            resolvable.append(gate.resolvable_slowdown(result.baseline_ms, result.candidate_ms, trial))
            print(f"A/A trial {trial + 1}: ratio {result.ratio:.3f} CI [{result.ci[0]:.3f}, {result.ci[1]:.3f}] "
                  f"p={result.p_slower:.3g} → {result.verdict} {result.note}; A/A p99 = {resolvable[-1]:.1%} "
                  f"(failures so far {verdicts.count('regression')}/{trial + 1})", flush=True)
        slow_diffs = gate.structural_diffs("slowed", gate.structural_facts(base.manifest),
                                           gate.structural_facts(slow.manifest), config.structural_threshold)
        exact = gate.structural_diffs("structural", gate.structural_facts(base.manifest),
                                      gate.structural_facts(extra_node.manifest), config.structural_threshold)

    print("\n== summary ==")
    print(f"A/A: {verdicts.count('regression')} failures / {args.trials} trials "
          f"({verdicts.count('warning')} warnings)")
    print(f"calibration (A/A p99 resolvable slowdown): median {np.median(resolvable):.1%}, "
          f"range {min(resolvable):.1%}–{max(resolvable):.1%}")
    print(f"A/B ≈{args.extra / CONVS:.0%} slowdown: latency verdict {slowed.verdict} (ratio {slowed.ratio:.3f}, "
          f"p={slowed.p_slower:.3g}, A/A band {slowed.band:.1%}) {slowed.note}; "
          f"exact mode also: {', '.join(d.describe() for d in slow_diffs if d.failed)}")
    print(f"exact mode, one extra node: {'caught' if any(d.failed for d in exact) else 'MISSED'} "
          f"({'; '.join(d.describe() for d in exact)})")


if __name__ == "__main__":
    main()
