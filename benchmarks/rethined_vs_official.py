"""Latency of rbench's ``rethined`` LR network against the official RETHINED first release, interleaved on ORT CPU.

What it measures
    The LR network at 512x512 (coarse CNN + NeuralPatchMatch; at 512 our pipeline runs nothing else) of
    ``rethined_bench.create_model("rethined")`` against the official RETHINED v0 (CrisalixSA/rethined@33d6e9f,
    ``model.py``: smp U-Net with a MobileOne-S4 encoder, config ``embed_dim=576, feature_i=3, feature_dim=448``).
    Both sides: inference form, eval mode, fp32, batch 1, random weights (latency does not depend on them), exported
    by rbench's ``exporters.onnx.export_onnx`` (torch.onnx dynamo exporter, opset 18, ``onnx.checker`` full check,
    onnxsim) and run by ONNX Runtime's CPU EP with rbench's ``create_session`` (2 intra-op threads, 1 inter-op,
    sequential, ORT_ENABLE_ALL). Both get the same inputs, ``make_inputs(512, 512)``, with the image pre-masked
    (``image * (1 - mask)``, the official convention; ours masks internally, so its output is unchanged).

    The official side is taken as a user would deploy it: the MobileOne encoder re-parameterised with smp's own
    ``reparameterize_model``, and only the first output (the refined LR image) exported, as ours has one output;
    its attention (a 4096x4096 map) and coarse image stay internal, so neither side pays for copying them out.
    Its ONNX file is ~214 MB: the weights plus two 4096x4096 fp32 constants derived from its ``qk_mask`` buffer.

    Timing: ``--rounds`` rounds, each a fresh process per side (rbench's unit of replication), order alternating
    AB, BA, ... so drift and order effects fall on both sides alike. A process loads the session, runs one first
    inference, ``--warmup`` more, then at least ``--min-iters`` timed iterations and ``--min-time`` seconds
    (defaults: rbench's protocol, 1 warm-up, >= 5 iterations and >= 1 s).
    Reported per side: median of process medians, min, CV; the ratio ours/official of the medians of process
    medians with a paired bootstrap 95% CI over rounds and a one-sided Mann-Whitney test of
    "ours < 0.5 x official" on the process medians; params and fvcore GMACs of both inference forms; and a
    PASS/FAIL line against the 0.5x target (point ratio <= 0.5). Exit code 0 on PASS, 1 on FAIL.

Building the official side (outside the repository; never commit it)
    The official code is read from a scratch checkout and built in a scratch venv: torch 2.13.0 (the CPU wheel),
    segmentation-models-pytorch 0.4.0 (v0 calls ``decoder(*features)``, which smp >= 0.5 rejects), einops, and the
    same onnx/onnxscript/onnxsim/onnxruntime/fvcore/numpy pins as rbench. torchvision 0.28.0 (torch 2.13's pair) is
    only on PyPI as a CUDA build: its Python code imports fine, its C ops cannot load with the CPU torch, so
    ``export-official`` declares the two op schemas torchvision's import registers fake kernels for (nms, qnms);
    neither smp's MobileOne U-Net nor ``model.py`` runs a torchvision op. No pretrained weights are downloaded
    (``encoder_weights=None``). ``model.py`` is checked against its git blob id at 33d6e9f before it is imported.

    # the official code at 33d6e9f (only its code files)
    git clone https://github.com/CrisalixSA/rethined /tmp/rethined_git
    mkdir -p /tmp/official_rethined
    git -C /tmp/rethined_git archive 33d6e9f model.py utils.py pyproject.toml README.md \\
        | tar -x -C /tmp/official_rethined
    # its scratch venv
    python3.11 -m venv /tmp/venv_official
    printf 'torch==2.13.0\\ntorchvision==0.28.0\\n' > /tmp/official_constraints.txt
    /tmp/venv_official/bin/pip install torch==2.13.0  # the CPU wheel (elsewhere: from PyTorch's CPU index)
    /tmp/venv_official/bin/pip install --no-deps torchvision==0.28.0
    /tmp/venv_official/bin/pip install -c /tmp/official_constraints.txt -c constraints.txt \\
        segmentation-models-pytorch==0.4.0 einops onnx onnxscript onnxsim onnxruntime fvcore

Running it (from the repository root, in rbench's .venv)
    .venv/bin/python benchmarks/rethined_vs_official.py run \\
        --official-repo /tmp/official_rethined --official-python /tmp/venv_official/bin/python

    ``run`` exports ours (rbench's cached ``export``) and the official model (``export-official`` in the scratch
    venv, cached by model.py's blob id and this script's settings) into ``--workdir`` (default: a folder in the
    system temp dir), times both through the ``worker`` subcommand, prints a markdown table and writes
    ``results.json`` beside the models. On a 2-core host the first run spends ~3 min exporting the official model
    and ~1.5 min ours; the 7 rounds took ~7.5 min at load average 7-9 (other jobs on the host), far less idle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_COMMIT = "33d6e9f22fe306288ad298acd8a5c4ed9597f4f5"
OFFICIAL_MODEL_BLOB = "722e48c4da41daff9ff01a821b34e1e5192cb1fe"  # git blob id of model.py at OFFICIAL_COMMIT
SIZE = 512
OPSET = 18
TARGET_RATIO = 0.5
REPARAM_ATOL = 1e-4
PARITY_ATOL = 1e-4
BOOTSTRAP_RESAMPLES = 10_000
_LIBRARY_FRAGMENTS: list[Any] = []

# The configuration in the official model.py's ``__main__`` block (33d6e9f), without ImageNet weights.
OFFICIAL_CONFIG: dict[str, Any] = {
    "coarse_model": {
        "class": "MobileOneCoarse",
        "parameters": {"encoder_name": "mobileone_s4", "encoder_weights": None, "in_channels": 3, "classes": 3},
    },
    "generator": {
        "generator_class": "PatchInpainting",
        "params": {
            "kernel_size": 8, "nheads": 1, "stem_out_stride": 1, "stem_out_channels": 3,
            "initial_temperature_scaling": 1, "final_temperature_scaling": 1, "merge_mode": "all",
            "image_size": SIZE, "embed_dim": 576, "use_qpos": None, "use_kpos": None, "dropout": 0.1,
            "feature_i": 3, "concat_features": True, "final_conv": True, "feature_dim": 448,
            "attention_type": "MultiHeadAttention", "compute_v": False,
        },
    },
}


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def official_settings(official_repo: Path) -> dict[str, Any]:
    """What the official artifact depends on besides the installed packages; a cached build must match it."""
    return {"model_py_blob": git_blob_id(official_repo / "model.py"), "size": SIZE, "opset": OPSET,
            "config": OFFICIAL_CONFIG, "reparameterized": True, "outputs": ["refined LR image"]}


def timing_inputs() -> dict[str, Any]:
    """The inputs both sides are timed on: make_inputs(512, 512) with the image pre-masked."""
    from rethined_bench.inputs import make_inputs

    image, mask = make_inputs(SIZE, SIZE)
    return {"image": (image * (1.0 - mask)).numpy(), "mask": mask.numpy()}


# --- official side: runs in the scratch venv (torch 2.13 + smp 0.4.0) ----------------------------------------------


def make_torchvision_importable() -> None:
    """Declare ``torchvision::nms``/``qnms`` when torchvision's C ops cannot load (its CUDA wheel on CPU torch).

    torchvision's import registers fake kernels for these two ops unconditionally and fails if they do not exist;
    every other op registration it makes is skipped when its extension is missing. Nothing here runs them.
    """
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    library = next(Path(spec.origin).parent.glob("_C*.so"), None)
    try:
        if library is not None:
            torch.ops.load_library(str(library))
            return
    except OSError:
        pass
    fragment = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        fragment.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY_FRAGMENTS.append(fragment)  # a Library deregisters its ops when it is collected


def export_official(official_repo: Path, out: Path) -> None:
    """Build the official v0 model, re-parameterise it, export its LR network and write ``<out>.json``."""
    import importlib.util
    import warnings
    from importlib import metadata

    import torch
    from torch import nn

    sys.path.insert(0, str(REPO_ROOT))
    from exporters.base import parity
    from exporters.onnx import export_onnx, graph_statistics
    from rethined_bench.measure.flops import count_params, fvcore_macs
    from rethined_bench.runners.ort import create_session

    model_py = official_repo / "model.py"
    blob = git_blob_id(model_py)
    if blob != OFFICIAL_MODEL_BLOB:
        raise SystemExit(f"{model_py} is not model.py at {OFFICIAL_COMMIT[:7]} (blob {blob[:12]}, expected "
                         f"{OFFICIAL_MODEL_BLOB[:12]})")
    make_torchvision_importable()
    spec = importlib.util.spec_from_file_location("rethined_official_model", model_py)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    from segmentation_models_pytorch.encoders.mobileone import reparameterize_model

    class OfficialLR(nn.Module):
        """The official ``InpaintingModel`` unchanged; only its first output (the refined LR image) is returned."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(image, mask)[0]

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_form = OfficialLR(official.InpaintingModel(OFFICIAL_CONFIG)).eval()
    deployed = reparameterize_model(train_form).eval()

    inputs = timing_inputs()
    example = (torch.from_numpy(inputs["image"]), torch.from_numpy(inputs["mask"]))
    with torch.inference_mode():
        reference = train_form(*example)
        expected = deployed(*example)
    reparam_error = float((reference - expected).abs().max())
    if not reparam_error < REPARAM_ATOL:
        raise SystemExit(f"re-parameterised model differs from the train-time form by {reparam_error:.3g}")

    export_onnx(deployed, out, SIZE, SIZE, opset=OPSET, example=example)
    candidate = create_session(out).run(None, inputs)[0]
    onnx_parity = parity(expected.numpy(), candidate)
    if not onnx_parity["max_abs_error"] < PARITY_ATOL:
        raise SystemExit(f"ORT output differs from PyTorch by {onnx_parity['max_abs_error']:.3g}")

    gmacs, skipped, _ = fvcore_macs(deployed, SIZE, SIZE)
    graph = graph_statistics(out)
    record = {
        "settings": official_settings(official_repo),
        "commit": OFFICIAL_COMMIT,
        "params": {"train": count_params(train_form), "deploy": count_params(deployed)},
        "fvcore_gmacs": gmacs,
        "fvcore_skipped_ops": skipped,
        "reparam_max_abs_error": reparam_error,
        "parity": onnx_parity,
        "onnx": {"exporter": "torch.onnx dynamo", "simplifier": "onnxsim", "node_count": graph["node_count"],
                 "initializer_bytes": graph["initializer_bytes"], "size_bytes": out.stat().st_size},
        "versions": {p: metadata.version(p) for p in ("torch", "segmentation_models_pytorch", "timm", "einops",
                                                      "onnx", "onnxscript", "onnxsim", "onnxruntime")},
    }
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2) + "\n")


# --- timing worker: one fresh process, rbench's venv --------------------------------------------------------------


def time_process(onnx_path: Path, threads: int, warmup: int, min_iters: int, min_time_s: float) -> dict[str, Any]:
    """One process: load the session, first inference, warm-up, then rbench's timed loop."""
    import time

    import numpy as np

    from rethined_bench.measure.protocol import Protocol, timed_iterations
    from rethined_bench.runners.ort import create_session

    inputs = timing_inputs()
    begin = time.perf_counter()
    session = create_session(onnx_path, threads=threads)
    load_ms = (time.perf_counter() - begin) * 1e3
    begin = time.perf_counter()
    output = session.run(None, inputs)[0]
    first_ms = (time.perf_counter() - begin) * 1e3
    if output.shape != (1, 3, SIZE, SIZE) or not np.all(np.isfinite(output)):
        raise RuntimeError(f"{onnx_path.name}: unexpected output {output.shape} or non-finite values")
    for _ in range(warmup):
        session.run(None, inputs)
    protocol = Protocol(warmup=warmup, min_iters=min_iters, min_time_s=min_time_s, max_time_s=120.0)
    samples, _ = timed_iterations(lambda: session.run(None, inputs), protocol)
    return {"load_ms": load_ms, "first_ms": first_ms, "samples_ms": samples}


# --- driver: rbench's venv ------------------------------------------------------------------------------------------


def export_ours(workdir: Path) -> tuple[Path, dict[str, Any]]:
    from exporters.base import ExportRequest, export
    from exporters.onnx import OnnxExporter

    artifact = export(ExportRequest(model="rethined", height=SIZE, width=SIZE, target="onnx",
                                    options={"opset": OPSET}), OnnxExporter(), workdir)
    return artifact.path, artifact.manifest


def ensure_official(official_repo: Path, official_python: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The official ONNX and its record, rebuilt in the scratch venv unless a build with the same settings exists."""
    path = workdir / f"official-rethined-{OFFICIAL_COMMIT[:7]}_onnx-fp32_{SIZE}x{SIZE}.onnx"
    record_path = path.with_name(path.name + ".json")
    if path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == official_settings(official_repo):
            return path, record
    print(f"exporting the official model with {official_python} ...", file=sys.stderr, flush=True)
    subprocess.run([str(official_python), str(Path(__file__).resolve()), "export-official",
                    "--official-repo", str(official_repo), "--out", str(path)], check=True, cwd=REPO_ROOT,
                   stdout=subprocess.DEVNULL)
    return path, json.loads(record_path.read_text())


def run_worker(onnx_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "worker", "--onnx", str(onnx_path),
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--min-iters", str(args.min_iters),
               "--min-time", str(args.min_time)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"worker for {onnx_path.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio_statistics(ours: list[float], official: list[float]) -> dict[str, float]:
    """Ratio of medians of process medians, its paired bootstrap 95% CI over rounds, and a Mann-Whitney p-value."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    ours_a, official_a = np.asarray(ours), np.asarray(official)
    rounds = np.random.default_rng(0).integers(0, len(ours_a), size=(BOOTSTRAP_RESAMPLES, len(ours_a)))
    resampled = np.median(ours_a[rounds], axis=1) / np.median(official_a[rounds], axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    below_target = mannwhitneyu(ours_a, TARGET_RATIO * official_a, alternative="less")
    return {"ratio": float(np.median(ours_a) / np.median(official_a)), "ci_low": float(low),
            "ci_high": float(high), "mannwhitney_p_below_target": float(below_target.pvalue)}


def markdown(result: dict[str, Any]) -> str:
    ours, official = result["ours"], result["official"]

    def ms(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values)

    rows = [
        ("median of process medians (ms)", f"{ours['latency']['median_of_process_medians']:.1f}",
         f"{official['latency']['median_of_process_medians']:.1f}"),
        ("min (ms)", f"{ours['latency']['min']:.1f}", f"{official['latency']['min']:.1f}"),
        ("process medians (ms)", ms(ours["latency"]["process_medians"]),
         ms(official["latency"]["process_medians"])),
        ("CV (all samples)", f"{ours['latency']['cv']:.1%}", f"{official['latency']['cv']:.1%}"),
        ("samples", str(ours["latency"]["n"]), str(official["latency"]["n"])),
        ("params, inference form (train form)", f"{ours['params']['deploy']:,} ({ours['params']['train']:,})",
         f"{official['params']['deploy']:,} ({official['params']['train']:,})"),
        ("fvcore GMACs @512", f"{ours['fvcore_gmacs']:.1f}", f"{official['fvcore_gmacs']:.1f}"),
        ("ONNX nodes / file MB", f"{ours['onnx_nodes']} / {ours['onnx_mb']:.1f}",
         f"{official['onnx_nodes']} / {official['onnx_mb']:.1f}"),
    ]
    ratio = result["ratio"]
    verdict = "PASS" if result["passed"] else "FAIL"
    lines = [
        f"| {SIZE}x{SIZE}, ORT {result['onnxruntime']} CPU fp32, {result['threads']} threads | ours (`rethined` LR) "
        f"| official v0 ({OFFICIAL_COMMIT[:7]}) |",
        "|---|---:|---:|",
        *(f"| {name} | {a} | {b} |" for name, a, b in rows),
        "",
        f"ours/official = **{ratio['ratio']:.3f}x** (paired bootstrap 95% CI {ratio['ci_low']:.3f}-"
        f"{ratio['ci_high']:.3f} over {result['rounds']} interleaved rounds; Mann-Whitney p = "
        f"{ratio['mannwhitney_p_below_target']:.2g} for ours < {TARGET_RATIO} x official)",
        f"{verdict}: ratio {ratio['ratio']:.3f} {'<=' if result['passed'] else '>'} target {TARGET_RATIO}",
        f"host: {result['cpu']}; load average {result['load_average_before']} before, "
        f"{result['load_average_after']} after",
    ]
    for side in ("ours", "official"):
        if result[side]["latency"]["unstable"]:
            lines.append(f"note: {side} flagged unstable ({'; '.join(result[side]['latency']['reasons'])})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import onnxruntime

    from rethined_bench.measure.environment import cpu_model, load_average
    from rethined_bench.measure.stats import summarize

    official_repo = args.official_repo.resolve()
    workdir = args.workdir.resolve()
    if workdir.is_relative_to(REPO_ROOT):
        raise SystemExit("--workdir must be outside the repository: it holds a model built from the official code")
    workdir.mkdir(parents=True, exist_ok=True)
    official_path, official_record = ensure_official(official_repo, args.official_python, workdir)
    print("exporting ours (rbench export, cached) ...", file=sys.stderr, flush=True)
    ours_path, ours_manifest = export_ours(workdir)

    load_before = load_average()
    samples: dict[str, list[list[float]]] = {"ours": [], "official": []}
    order = [("ours", ours_path), ("official", official_path)]
    for index in range(args.rounds):
        for side, path in order if index % 2 == 0 else order[::-1]:
            samples[side].append(run_worker(path, args)["samples_ms"])
        print(f"round {index + 1}/{args.rounds}: ours {statistics.median(samples['ours'][-1]):.0f} ms, "
              f"official {statistics.median(samples['official'][-1]):.0f} ms", file=sys.stderr, flush=True)
    load_after = load_average()

    ours_latency, official_latency = summarize(samples["ours"]), summarize(samples["official"])
    ratio = ratio_statistics(ours_latency.process_medians, official_latency.process_medians)
    result = {
        "rounds": args.rounds, "threads": args.threads, "onnxruntime": onnxruntime.__version__, "cpu": cpu_model(),
        "load_average_before": load_before, "load_average_after": load_after,
        "ours": {"latency": ours_latency.to_dict(), "params": ours_manifest["params"],
                 "fvcore_gmacs": ours_manifest["work"]["fvcore_gmacs"],
                 "onnx_nodes": ours_manifest["onnx"]["node_count"], "onnx_mb": ours_manifest["size_bytes"] / 2**20,
                 "onnx": str(ours_path)},
        "official": {"latency": official_latency.to_dict(), "params": official_record["params"],
                     "fvcore_gmacs": official_record["fvcore_gmacs"],
                     "onnx_nodes": official_record["onnx"]["node_count"],
                     "onnx_mb": official_record["onnx"]["size_bytes"] / 2**20, "onnx": str(official_path),
                     "build": official_record},
        "ratio": ratio,
        "passed": ratio["ratio"] <= TARGET_RATIO,
    }
    (workdir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0 if result["passed"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("run", help="export both sides and time them interleaved (rbench's venv)")
    bench.add_argument("--official-repo", type=Path, required=True,
                       help="scratch checkout of CrisalixSA/rethined@33d6e9f (holds model.py)")
    bench.add_argument("--official-python", type=Path, required=True,
                       help="python of the scratch venv with torch 2.13.0 and segmentation-models-pytorch 0.4.0")
    bench.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rethined_vs_official",
                       help="where both ONNX models and results.json go (outside the repository)")
    bench.add_argument("--rounds", type=int, default=7, help="interleaved rounds; one fresh process per side each")
    bench.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    bench.add_argument("--warmup", type=int, default=1, help="warm-up inferences after the first, per process")
    bench.add_argument("--min-iters", type=int, default=5, help="timed inferences per process (at least)")
    bench.add_argument("--min-time", type=float, default=1.0, help="timed seconds per process (at least)")

    build = commands.add_parser("export-official", help="(scratch venv) export the official LR network")
    build.add_argument("--official-repo", type=Path, required=True)
    build.add_argument("--out", type=Path, required=True)

    worker = commands.add_parser("worker", help="(internal) time one ONNX model in this process, print JSON")
    worker.add_argument("--onnx", type=Path, required=True)
    worker.add_argument("--threads", type=int, required=True)
    worker.add_argument("--warmup", type=int, required=True)
    worker.add_argument("--min-iters", type=int, required=True)
    worker.add_argument("--min-time", type=float, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "export-official":
        export_official(args.official_repo.resolve(), args.out.resolve())
        return 0
    if args.command == "worker":
        print(json.dumps(time_process(args.onnx, args.threads, args.warmup, args.min_iters, args.min_time)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
