"""Latency of rbench's networks against the official code, exported the same way and timed interleaved on ORT CPU.

Comparisons (each runs when its official checkout is given):

    migan      our MI-GAN-512 generator (``create_model("migan").net``) against ``Generator(resolution=512)`` of
               Picsart-AI-Research/MI-GAN@ca4df2eb ``lib/model_zoo/migan_inference.py``, both behind the official
               demo's input packing ``cat([m - 0.5, img * m])``; 512x512; target <= 1.0x.
    coordfill  our CoordFill network (``create_model("coordfill").net``) against ``CoordFill.forward`` of
               NiFangBaAGe/CoordFill@989a393f ``models/coordfill.py`` (the released configuration: attffc,
               scale_injection, mask_prediction); 2048x2048; target <= 1.0x.
    rethined   our RETHINED LR network against CrisalixSA/rethined@33d6e9f ``model.py`` (smp U-Net with a
               MobileOne-S4 encoder, re-parameterised with smp's ``reparameterize_model``), first output only;
               512x512; target <= 0.5x.

What is compared
    Both sides: inference form, eval mode, fp32, batch 1, the native convention of the official code (MI-GAN and
    CoordFill: image in [-1, 1], mask 1 = known; RETHINED: pre-masked image in [0, 1], mask 1 = hole), inputs
    from ``make_inputs`` at the comparison's size. MI-GAN and CoordFill have the same architecture and parameter
    names on both sides, so the official model runs *our* seeded weights (loaded with ``strict=True``) and the two
    exports must agree (max abs difference < 1e-4): the comparison is the same function, formulated two ways.
    RETHINED's official v0 is a different network (22.5M parameters) with its own seeded weights.

    Both sides are exported by the same code, rbench's ``exporters.onnx.export_onnx``: torch.onnx dynamo exporter,
    opset 18, ``onnx.checker`` full check, onnxsim; each export's ONNX Runtime output is checked against its own
    PyTorch output (< 1e-4). Both run in ONNX Runtime's CPU EP through rbench's ``create_session`` (2 intra-op
    threads, 1 inter-op, sequential, ORT_ENABLE_ALL).

Timing
    ``--rounds`` rounds; in each, every comparison runs one fresh process per side, order alternating AB, BA, ...
    so that drift and order effects fall on both sides alike. A process loads the session, runs one first
    inference, ``--warmup`` more, then at least ``--min-iters`` timed iterations and ``--min-time`` seconds
    (rbench's protocol: 1 warm-up, >= 5 iterations, >= 1 s). Reported per side: median of process medians, min,
    CV; the ratio ours/official of the medians of process medians with a paired bootstrap 95% CI over rounds and a
    one-sided Mann-Whitney test of "ours < target x official"; params and fvcore GMACs; PASS/FAIL against the
    target (point ratio <= target). Exit code 0 when every comparison passes, 1 otherwise.

Where the time goes
    After the rounds, each side runs once more with ORT's profiler (one warm-up, ``--profile-runs`` profiled
    inferences) and its kernel times are summed per stage by the module that produced each node
    (:mod:`rethined_bench.measure.breakdown`): CoordFill's encoder (``refine``), parameter generator
    (``asap.lowres_stream``) and per-pixel MLP (``asap.highres_stream``); MI-GAN's encoder and synthesis.

Building the official side (outside the repository; never commit it)
    The official code is read from scratch checkouts and built in a scratch venv; every official source file that
    is imported is checked against its git blob id before it is. No pretrained weights are downloaded.

    # the official code (only the files needed)
    for r in Picsart-AI-Research/MI-GAN NiFangBaAGe/CoordFill CrisalixSA/rethined; do
        git clone https://github.com/$r /tmp/git_$(basename $r); done
    mkdir -p /tmp/official_migan /tmp/official_coordfill /tmp/official_rethined
    git -C /tmp/git_MI-GAN archive ca4df2eb lib | tar -x -C /tmp/official_migan
    git -C /tmp/git_CoordFill archive 989a393f models | tar -x -C /tmp/official_coordfill
    git -C /tmp/git_rethined archive 33d6e9f model.py utils.py | tar -x -C /tmp/official_rethined
    # the scratch venv: torch 2.13.0 (CPU wheel); torchvision 0.28.0 (torch 2.13's pair, only on PyPI as a CUDA
    # build: its Python imports, its C ops cannot load, see make_torchvision_importable); smp 0.4.0 (RETHINED v0
    # calls decoder(*features), which smp >= 0.5 rejects); scipy and kornia (imported by CoordFill's model files);
    # rbench's pins for the rest
    python3.11 -m venv /tmp/venv_official
    printf 'torch==2.13.0\\ntorchvision==0.28.0\\n' > /tmp/official_constraints.txt
    /tmp/venv_official/bin/pip install torch==2.13.0
    /tmp/venv_official/bin/pip install --no-deps torchvision==0.28.0
    /tmp/venv_official/bin/pip install -c /tmp/official_constraints.txt -c constraints.txt \\
        segmentation-models-pytorch==0.4.0 einops scipy kornia onnx onnxscript onnxsim onnxruntime fvcore

    CoordFill's ``models/__init__.py`` also imports its training code (GAN losses, LPIPS with IPython, ...); the
    benchmark imports the model files (``models.py``, ``coordfill.py`` and what it imports) as the package
    ``models`` without running that ``__init__``.

Running it (from the repository root, in rbench's .venv)
    .venv/bin/python benchmarks/vs_official.py run --official-python /tmp/venv_official/bin/python \\
        --migan /tmp/official_migan --coordfill /tmp/official_coordfill [--rethined /tmp/official_rethined]

    Exports (cached in ``--workdir`` by settings, code and blob ids) take ~6 min on a 2-core host the first time;
    7 rounds of all three comparisons and the profiles ~5.5 min more. ``results.json`` is written beside the
    models. Measured on a quiet 2-core AMD EPYC host (ours/official, 95% CI): MI-GAN 0.85x (0.85-0.86),
    CoordFill 0.83x (0.82-0.84), RETHINED 0.37x (0.37-0.38).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # the scratch venv imports rbench's exporters from the checkout
OPSET = 18
PARITY_ATOL = 1e-4
BOOTSTRAP_RESAMPLES = 10_000
_LIBRARY_FRAGMENTS: list[Any] = []


@dataclass(frozen=True)
class Comparison:
    """One ours-vs-official pair: what is built on each side and what it must achieve."""

    name: str
    ours_label: str
    official_label: str
    commit: str
    blobs: dict[str, str]  # official source file (relative to the checkout) → git blob id at ``commit``
    size: int
    target: float
    shared_weights: bool  # the official model runs our weights (same architecture and names)
    stages: dict[str, list[str]] = field(default_factory=dict)  # breakdown label → module names, first match wins


COMPARISONS = {
    c.name: c for c in (
        Comparison("migan", "`migan` generator", "official Generator(512)", "ca4df2ebd1d2c657896a0fac33c7daff6f5d94e6",
                   {"lib/model_zoo/migan_inference.py": "023850b05a68690e693455e891cb05fe4e2eacb5"},
                   size=512, target=1.0, shared_weights=True,
                   stages={"encoder": ["encoder"], "synthesis": ["synthesis"]}),
        Comparison("coordfill", "`coordfill` network", "official CoordFill.forward",
                   "989a393fe2bc5b437d0ae97bf3178ee39d56e900",
                   {"models/models.py": "97cd9bd6fad4fdde66888f6d4ee579889dc96182",
                    "models/coordfill.py": "0b33500416e422448af301540a205284d4c696e7",
                    "models/ffc.py": "55ca5a0fc833c1358e3f14098e479912b8fd131f",
                    "models/ffc_baseline.py": "8fd783b14daf93d7425fd8ca55ee31c039202c33",
                    "models/modules.py": "402c92b4ecf681e1348b6851114850398960d294",
                    "models/networks.py": "080a9100af750ef8f28279b2de37fced3be0e617"},
                   size=2048, target=1.0, shared_weights=True,
                   stages={"encoder": ["refine"], "parameter generator": ["lowres_stream"],
                           "per-pixel MLP": ["highres_stream"]}),
        Comparison("rethined", "`rethined` LR network", "official v0 LR network",
                   "33d6e9f22fe306288ad298acd8a5c4ed9597f4f5",
                   {"model.py": "722e48c4da41daff9ff01a821b34e1e5192cb1fe"},
                   size=512, target=0.5, shared_weights=False,
                   stages={"coarse network": ["coarse", "generator.encoder_decoder"],
                           "patch attention": ["npm", "generator"]}),
    )
}

# The configuration in RETHINED v0's model.py ``__main__`` block (33d6e9f), without ImageNet weights.
RETHINED_V0_CONFIG: dict[str, Any] = {
    "coarse_model": {
        "class": "MobileOneCoarse",
        "parameters": {"encoder_name": "mobileone_s4", "encoder_weights": None, "in_channels": 3, "classes": 3},
    },
    "generator": {
        "generator_class": "PatchInpainting",
        "params": {
            "kernel_size": 8, "nheads": 1, "stem_out_stride": 1, "stem_out_channels": 3,
            "initial_temperature_scaling": 1, "final_temperature_scaling": 1, "merge_mode": "all",
            "image_size": 512, "embed_dim": 576, "use_qpos": None, "use_kpos": None, "dropout": 0.1,
            "feature_i": 3, "concat_features": True, "final_conv": True, "feature_dim": 448,
            "attention_type": "MultiHeadAttention", "compute_v": False,
        },
    },
}


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timing_inputs(comparison: Comparison) -> dict[str, Any]:
    """The inputs both sides get, in the official code's convention."""
    from rethined_bench.inputs import make_inputs

    image, hole = make_inputs(comparison.size, comparison.size)
    if comparison.name == "rethined":
        return {"image": (image * (1.0 - hole)).numpy(), "mask": hole.numpy()}
    return {"image": (image * 2.0 - 1.0).numpy(), "mask": (1.0 - hole).numpy()}


# --- the two sides as (image, mask) → image modules --------------------------------------------------------------


def _wrap(forward: Callable[..., Any], model: Any) -> Any:
    """An ``nn.Module`` holding ``model`` whose forward(image, mask) is ``forward(model, image, mask)``."""
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image, mask):  # noqa: ANN001, ANN201 - traced by the exporter
            return forward(self.model, image, mask)

    return Wrapped().eval()


def _migan_packing(generator: Any, image: Any, known: Any) -> Any:
    """The official demo's input: mask channel first, ``cat([m - 0.5, img * m])``."""
    import torch

    return generator(torch.cat([known - 0.5, image * known], dim=1))


def ours_module(comparison: Comparison) -> tuple[Any, Any]:
    """(train form, inference form) of our network for ``comparison``, seeded as rbench seeds it."""
    from rethined_bench import create_model
    from rethined_bench.optimize import deploy

    if comparison.name == "migan":
        wrapped = _wrap(_migan_packing, create_model("migan").net.eval())  # already the inference form
        return wrapped, wrapped
    if comparison.name == "coordfill":
        net = create_model("coordfill").net.eval()
        return net, net
    pipeline = create_model("rethined").eval()  # at 512 the pipeline runs the LR network only
    return pipeline, deploy(pipeline, check_size=(comparison.size, comparison.size))


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


def _load_file(name: str, path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _official_coordfill_package(repo: Path) -> Any:
    """CoordFill's ``models`` package with its model files only (its ``__init__`` imports the training code)."""
    import importlib
    import types

    package = types.ModuleType("models")
    package.__path__ = [str(repo / "models")]
    sys.modules["models"] = package
    registry = importlib.import_module("models.models")
    package.register, package.make = registry.register, registry.make
    return importlib.import_module("models.coordfill")


def official_module(comparison: Comparison, repo: Path, weights: Path | None) -> tuple[Any, Any]:
    """(train form, inference form) of the official model, built from the checked checkout at ``repo``."""
    import torch
    from torch import nn

    for relative, blob in comparison.blobs.items():
        actual = git_blob_id(repo / relative)
        if actual != blob:
            raise SystemExit(f"{repo / relative} is not {relative} at {comparison.commit[:7]} "
                             f"(blob {actual[:12]}, expected {blob[:12]})")
    state = torch.load(weights, map_location="cpu", weights_only=True) if weights is not None else None
    if comparison.name == "migan":
        generator = _load_file("migan_inference_official", repo / "lib/model_zoo/migan_inference.py").Generator(512)
        generator.load_state_dict(state, strict=True)
        wrapped = _wrap(_migan_packing, generator.eval())
        return wrapped, wrapped
    if comparison.name == "coordfill":
        from argparse import Namespace

        official = _official_coordfill_package(repo).CoordFill(
            Namespace(n_channels=3, n_classes=3, no_upsampling=True), "coordfill",
            mask_prediction=True, attffc=True, scale_injection=True)
        nn.Module.load_state_dict(official, state, strict=True)  # its own override ignores missing keys
        wrapped = _wrap(lambda model, image, known: model([image, known]), official.eval())
        return wrapped, wrapped
    make_torchvision_importable()
    from segmentation_models_pytorch.encoders.mobileone import reparameterize_model

    v0 = _load_file("rethined_official_model", repo / "model.py")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_form = _wrap(lambda model, image, mask: model(image, mask)[0],
                           v0.InpaintingModel(RETHINED_V0_CONFIG).eval())
    return train_form, reparameterize_model(train_form).eval()


# --- export: the same code for both sides -----------------------------------------------------------------------


def export_side(comparison: Comparison, side: str, train_form: Any, inference_form: Any, out: Path,
                settings: dict[str, Any]) -> dict[str, Any]:
    """Export ``inference_form`` as rbench exports, check it, and write ``<out>.json`` (record) and the stage map."""
    from importlib import metadata

    import onnx
    import torch

    from rethined_bench.artifact import compare
    from exporters.onnx import export_onnx, graph_statistics, simplify_in_place
    from rethined_bench.measure.breakdown import module_paths
    from rethined_bench.measure.flops import count_params, fvcore_macs
    from rethined_bench.runners.ort import create_session

    inputs = timing_inputs(comparison)
    example = tuple(torch.from_numpy(inputs[name]) for name in ("image", "mask"))
    with torch.inference_mode():
        expected = inference_form(*example)
        deploy_error = float((train_form(*example) - expected).abs().max()) if train_form is not inference_form else 0.0
    if not deploy_error < PARITY_ATOL:
        raise SystemExit(f"{side}: the inference form differs from the train form by {deploy_error:.3g}")

    export_onnx(inference_form, out, comparison.size, comparison.size, opset=OPSET, example=example, simplify=False)
    paths = module_paths(onnx.load(str(out), load_external_data=False))  # onnxsim drops the scope metadata
    out.with_name(out.name + ".scopes.json").write_text(json.dumps(paths) + "\n")
    simplify_in_place(out)

    candidate = create_session(out).run(None, inputs)[0]
    onnx_parity = compare(expected.numpy(), candidate)
    if not onnx_parity["max_abs_error"] < PARITY_ATOL:
        raise SystemExit(f"{side}: ORT output differs from PyTorch by {onnx_parity['max_abs_error']:.3g}")
    torch.save(expected, out.with_name(out.name + ".output.pt"))  # for the cross-side check
    gmacs, skipped, _ = fvcore_macs(inference_form, comparison.size, comparison.size)
    graph = graph_statistics(out)
    record = {
        "settings": settings, "side": side,
        "params": {"train": count_params(train_form), "inference": count_params(inference_form)},
        "fvcore_gmacs": gmacs, "fvcore_skipped_ops": skipped, "deploy_max_abs_error": deploy_error,
        "parity": onnx_parity,
        "onnx": {"node_count": graph["node_count"], "initializer_bytes": graph["initializer_bytes"],
                 "size_bytes": out.stat().st_size},
        "versions": {p: metadata.version(p) for p in ("torch", "onnx", "onnxscript", "onnxsim", "onnxruntime")},
    }
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def export_command(args: argparse.Namespace) -> None:
    """(either venv) Build one side and export it; the ours side also saves the weights the official side loads."""
    import torch

    comparison = COMPARISONS[args.comparison]
    settings = json.loads(args.settings)
    torch.manual_seed(0)
    if args.side == "ours":
        train_form, inference_form = ours_module(comparison)
        if comparison.shared_weights:
            state = (inference_form.model if comparison.name == "migan" else inference_form).state_dict()
            torch.save(state, args.out.with_name(args.out.name + ".weights.pt"))
    else:
        train_form, inference_form = official_module(comparison, args.official_repo, args.weights)
    export_side(comparison, args.side, train_form, inference_form, args.out, settings)


def ensure_exported(comparison: Comparison, side: str, python: Path, workdir: Path, settings: dict[str, Any],
                    extra: list[str]) -> tuple[Path, dict[str, Any]]:
    """The side's ONNX and record, rebuilt unless a build with the same settings exists in ``workdir``."""
    path = workdir / f"{comparison.name}-{side}_onnx-fp32_{comparison.size}x{comparison.size}.onnx"
    record_path = path.with_name(path.name + ".json")
    if path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings:
            return path, record
    print(f"exporting {comparison.name} ({side}) with {python} ...", file=sys.stderr, flush=True)
    subprocess.run([str(python), str(Path(__file__).resolve()), "export", "--comparison", comparison.name,
                    "--side", side, "--out", str(path), "--settings", json.dumps(settings), *extra],
                   check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return path, json.loads(record_path.read_text())


def export_both(comparison: Comparison, repo: Path, official_python: Path, workdir: Path
                ) -> dict[str, tuple[Path, dict[str, Any]]]:
    from rethined_bench.provenance import code_fingerprint

    script = git_blob_id(Path(__file__))
    base = {"comparison": comparison.name, "size": comparison.size, "opset": OPSET, "script": script}
    ours = ensure_exported(comparison, "ours", Path(sys.executable), workdir,
                           {**base, "rbench_code": code_fingerprint()}, [])
    official_settings = {**base, "commit": comparison.commit, "blobs": comparison.blobs}
    extra = ["--official-repo", str(repo)]
    if comparison.shared_weights:
        weights = ours[0].with_name(ours[0].name + ".weights.pt")
        official_settings["weights_sha256"] = file_sha256(weights)
        extra += ["--weights", str(weights)]
    official = ensure_exported(comparison, "official", official_python, workdir, official_settings, extra)
    return {"ours": ours, "official": official}


def cross_side_difference(paths: dict[str, tuple[Path, dict[str, Any]]]) -> float:
    """Max abs difference between the two sides' PyTorch outputs (same inputs, same weights)."""
    import torch

    ours, official = (torch.load(paths[s][0].with_name(paths[s][0].name + ".output.pt")) for s in ("ours", "official"))
    return float((ours - official).abs().max())


# --- timing and profiling workers: one fresh process each, rbench's venv -----------------------------------------


def time_process(args: argparse.Namespace) -> dict[str, Any]:
    """One process: load the session, first inference, warm-up, then rbench's timed loop."""
    import time

    import numpy as np

    from rethined_bench.measure.protocol import Protocol, timed_iterations
    from rethined_bench.runners.ort import create_session

    inputs = timing_inputs(COMPARISONS[args.comparison])
    begin = time.perf_counter()
    session = create_session(args.onnx, threads=args.threads)
    load_ms = (time.perf_counter() - begin) * 1e3
    begin = time.perf_counter()
    output = session.run(None, inputs)[0]
    first_ms = (time.perf_counter() - begin) * 1e3
    if output.shape != inputs["image"].shape or not np.all(np.isfinite(output)):
        raise RuntimeError(f"{args.onnx.name}: unexpected output {output.shape} or non-finite values")
    for _ in range(args.warmup):
        session.run(None, inputs)
    protocol = Protocol(warmup=args.warmup, min_iters=args.min_iters, min_time_s=args.min_time, max_time_s=120.0)
    samples, _ = timed_iterations(lambda: session.run(None, inputs), protocol)
    return {"load_ms": load_ms, "first_ms": first_ms, "samples_ms": samples}


def profile_process(args: argparse.Namespace) -> dict[str, Any]:
    """One process: ORT-profiled inferences, kernel time per stage."""
    import onnx

    from rethined_bench.measure.breakdown import stage_map
    from rethined_bench.runners.ort import profile_stages

    comparison = COMPARISONS[args.comparison]
    paths = json.loads(args.onnx.with_name(args.onnx.name + ".scopes.json").read_text())
    stages = stage_map(paths, comparison.stages, run=onnx.load(str(args.onnx), load_external_data=False))
    times = profile_stages(args.onnx, timing_inputs(comparison), stages, threads=args.threads, runs=args.runs)
    return times.to_dict()


def run_worker(command: str, comparison: Comparison, onnx_path: Path, options: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), command, "--comparison", comparison.name,
                           "--onnx", str(onnx_path), *options], capture_output=True, text=True, check=False,
                          cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{command} for {onnx_path.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- driver: rbench's venv ---------------------------------------------------------------------------------------


def ratio_statistics(ours: list[float], official: list[float], target: float) -> dict[str, float]:
    """Ratio of medians of process medians, its paired bootstrap 95% CI over rounds, and a Mann-Whitney p-value."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    ours_a, official_a = np.asarray(ours), np.asarray(official)
    rounds = np.random.default_rng(0).integers(0, len(ours_a), size=(BOOTSTRAP_RESAMPLES, len(ours_a)))
    resampled = np.median(ours_a[rounds], axis=1) / np.median(official_a[rounds], axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    below_target = mannwhitneyu(ours_a, target * official_a, alternative="less")
    return {"ratio": float(np.median(ours_a) / np.median(official_a)), "ci_low": float(low),
            "ci_high": float(high), "mannwhitney_p_below_target": float(below_target.pvalue)}


def markdown(comparison: Comparison, result: dict[str, Any], host: dict[str, Any]) -> str:
    ours, official = result["ours"], result["official"]

    def both(get: Callable[[dict[str, Any]], str]) -> tuple[str, str]:
        return get(ours), get(official)

    rows = [
        ("median of process medians (ms)", *both(lambda s: f"{s['latency']['median_of_process_medians']:.1f}")),
        ("min (ms)", *both(lambda s: f"{s['latency']['min']:.1f}")),
        ("process medians (ms)", *both(lambda s: ", ".join(f"{v:.0f}" for v in s["latency"]["process_medians"]))),
        ("CV (all samples)", *both(lambda s: f"{s['latency']['cv']:.1%}")),
        ("samples", *both(lambda s: str(s["latency"]["n"]))),
        ("params, inference form (train form)",
         *both(lambda s: f"{s['params']['inference']:,} ({s['params']['train']:,})")),
        (f"fvcore GMACs @{comparison.size}", *both(lambda s: f"{s['fvcore_gmacs']:.2f}")),
        ("ONNX nodes / file MB", *both(lambda s: f"{s['onnx']['node_count']} / {s['onnx']['size_bytes'] / 2**20:.1f}")),
    ]
    for stage in dict.fromkeys([*ours["breakdown"]["ms"], *official["breakdown"]["ms"]]):
        rows.append((f"profiled kernel time: {stage} (ms, share)", *both(
            lambda s: f"{s['breakdown']['ms'].get(stage, 0.0):.1f} ({s['breakdown']['shares'].get(stage, 0.0):.0%})")))
    rows.append(("profiled: kernels / inference (ms); ORT-inserted share", *both(
        lambda s: f"{s['breakdown']['kernel_ms']:.1f} / {s['breakdown']['run_ms']:.1f}; "
                  f"{s['breakdown']['inserted_ms'] / s['breakdown']['kernel_ms']:.1%}")))
    ratio = result["ratio"]
    verdict = "PASS" if result["passed"] else "FAIL"
    lines = [
        f"### {comparison.name} at {comparison.size}x{comparison.size}",
        "",
        f"| ORT {host['onnxruntime']} CPU fp32, {host['threads']} threads | ours ({comparison.ours_label}) "
        f"| {comparison.official_label} ({comparison.commit[:7]}) |",
        "|---|---:|---:|",
        *(f"| {name} | {a} | {b} |" for name, a, b in rows),
        "",
        f"ours/official = **{ratio['ratio']:.3f}x** (paired bootstrap 95% CI {ratio['ci_low']:.3f}-"
        f"{ratio['ci_high']:.3f} over {host['rounds']} interleaved rounds; Mann-Whitney p = "
        f"{ratio['mannwhitney_p_below_target']:.2g} for ours < {comparison.target} x official)",
    ]
    if result["cross_side_max_abs_difference"] is not None:
        lines.append(f"same weights on both sides: outputs differ by at most "
                     f"{result['cross_side_max_abs_difference']:.2g} (PyTorch, fp32)")
    lines.append(f"{verdict}: ratio {ratio['ratio']:.3f} {'<=' if result['passed'] else '>'} target "
                 f"{comparison.target}")
    for side in ("ours", "official"):
        if result[side]["latency"]["unstable"]:
            lines.append(f"note: {side} flagged unstable ({'; '.join(result[side]['latency']['reasons'])})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import onnxruntime

    from rethined_bench.measure.environment import cpu_model, load_average
    from rethined_bench.measure.stats import summarize

    repos = {name: getattr(args, name).resolve() for name in COMPARISONS if getattr(args, name) is not None}
    if not repos:
        raise SystemExit("give at least one official checkout: --migan, --coordfill or --rethined")
    workdir = args.workdir.resolve()
    if workdir.is_relative_to(REPO_ROOT):
        raise SystemExit("--workdir must be outside the repository: it holds models built from the official code")
    workdir.mkdir(parents=True, exist_ok=True)
    exports = {name: export_both(COMPARISONS[name], repo, args.official_python, workdir)
               for name, repo in repos.items()}

    timing = ["--threads", str(args.threads), "--warmup", str(args.warmup), "--min-iters", str(args.min_iters),
              "--min-time", str(args.min_time)]
    host = {"rounds": args.rounds, "threads": args.threads, "onnxruntime": onnxruntime.__version__,
            "cpu": cpu_model(), "load_average_before": load_average()}
    samples = {name: {"ours": [], "official": []} for name in exports}
    for index in range(args.rounds):
        for name, paths in exports.items():
            order = ("ours", "official") if index % 2 == 0 else ("official", "ours")
            for side in order:
                samples[name][side].append(
                    run_worker("worker", COMPARISONS[name], paths[side][0], timing)["samples_ms"])
            print(f"round {index + 1}/{args.rounds} {name}: " + ", ".join(
                f"{side} {statistics.median(samples[name][side][-1]):.0f} ms" for side in ("ours", "official")),
                file=sys.stderr, flush=True)
    host["load_average_after"] = load_average()

    results: dict[str, Any] = {"host": host, "comparisons": {}}
    passed = True
    for name, paths in exports.items():
        comparison = COMPARISONS[name]
        result: dict[str, Any] = {}
        for side in ("ours", "official"):
            path, record = paths[side]
            breakdown = run_worker("profile", comparison, path, ["--threads", str(args.threads),
                                                                 "--runs", str(args.profile_runs)])
            result[side] = {**record, "latency": summarize(samples[name][side]).to_dict(), "breakdown": breakdown,
                            "onnx_path": str(path)}
        result["ratio"] = ratio_statistics(result["ours"]["latency"]["process_medians"],
                                           result["official"]["latency"]["process_medians"], comparison.target)
        result["passed"] = result["ratio"]["ratio"] <= comparison.target
        result["cross_side_max_abs_difference"] = cross_side_difference(paths) if comparison.shared_weights else None
        passed &= result["passed"]
        results["comparisons"][name] = result
        print(markdown(comparison, result, host) + "\n")
    print(f"host: {host['cpu']}; load average {host['load_average_before']} before, {host['load_average_after']} "
          f"after the rounds")
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if passed else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("run", help="export both sides of each comparison and time them interleaved")
    for name, comparison in COMPARISONS.items():
        bench.add_argument(f"--{name}", type=Path, help=f"scratch checkout of the official code at "
                                                        f"{comparison.commit[:8]} (runs this comparison)")
    bench.add_argument("--official-python", type=Path, default=Path(sys.executable),
                       help="python of the scratch venv the official models are built in (default: this one)")
    bench.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rbench_vs_official",
                       help="where the ONNX models and results.json go (outside the repository)")
    bench.add_argument("--rounds", type=int, default=7, help="interleaved rounds; one fresh process per side each")
    bench.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    bench.add_argument("--warmup", type=int, default=1, help="warm-up inferences after the first, per process")
    bench.add_argument("--min-iters", type=int, default=5, help="timed inferences per process (at least)")
    bench.add_argument("--min-time", type=float, default=1.0, help="timed seconds per process (at least)")
    bench.add_argument("--profile-runs", type=int, default=3, help="profiled inferences per side for the breakdown")

    build = commands.add_parser("export", help="(internal) build and export one side")
    build.add_argument("--comparison", choices=COMPARISONS, required=True)
    build.add_argument("--side", choices=("ours", "official"), required=True)
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--settings", required=True)
    build.add_argument("--official-repo", type=Path)
    build.add_argument("--weights", type=Path)

    for command, help_text in (("worker", "(internal) time one ONNX model in this process, print JSON"),
                               ("profile", "(internal) profile one ONNX model in this process, print JSON")):
        worker = commands.add_parser(command, help=help_text)
        worker.add_argument("--comparison", choices=COMPARISONS, required=True)
        worker.add_argument("--onnx", type=Path, required=True)
        worker.add_argument("--threads", type=int, required=True)
        if command == "worker":
            worker.add_argument("--warmup", type=int, required=True)
            worker.add_argument("--min-iters", type=int, required=True)
            worker.add_argument("--min-time", type=float, required=True)
        else:
            worker.add_argument("--runs", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "export":
        export_command(args)
        return 0
    if args.command in ("worker", "profile"):
        print(json.dumps((time_process if args.command == "worker" else profile_process)(args)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
