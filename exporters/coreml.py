"""Core ML target: deploy form → ML Program (``.mlpackage``) at a fixed resolution, checked on Linux, run on macOS.

``--target coreml`` alone means **deployment target iOS16, compute units ALL, fp16 compute precision**: iOS16 is the
first opset with native ``pixel_(un)shuffle`` and runs on every paper device (A12 phones and iPads reach iOS 18, the
M2 iPad Pro any release); a device profile overrides both through ``toolchain.coreml_deployment_target`` and
``toolchain.compute_units``. ``--precision fp32`` keeps the whole program in fp32 (no Neural Engine then).

Capture is ``torch.export`` + ``run_decompositions({})`` (pixel_(un)shuffle and bilinear resize stay single MIL ops;
backends.md §1.1), then ``coremltools.convert`` with named fp32 inputs ``image``, ``mask`` and output ``inpainted``
(as in the ONNX artifact; an fp16 program casts at its boundary). Compute units are only recorded (manifest and
package metadata): Core ML chooses them at load time (the ``local-coreml`` runner's ``compute_units``).

Every export is checked before its manifest is written, and a violation fails it (:class:`CoreMLValidationError`):

- the MIL program loads from the package; inputs and outputs have the declared names, fixed shapes and dtypes;
- the compute precision holds: every non-const op computes in the asked precision, except the declared boundary
  casts (fp32 input → fp16, fp16 → fp32 output);
- every op exists in the deployment target's opset (coremltools' MIL op registry) and the spec version is not
  newer than the target's;
- fp16 safety: no constant or weight is beyond fp16's ±65504 or non-finite, and the fp16 emulation below sees no
  activation overflow.

Prediction needs macOS, so the numerical check here is an emulation (:func:`fp16_error_bound`): the deploy form on
CPU with weights, inputs and every op's result rounded to fp16, against fp32; the manifest keeps max/mean abs error
and PSNR as ``fp16_error_bound``. On macOS the shared driver predicts with the ``local-coreml`` runner and checks
parity against PyTorch. A model the converter refuses raises :class:`CoreMLConversionError` with its reason.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from rethined_bench.artifact import compare
from rethined_bench.errors import RbenchError, UnsupportedExportError
from rethined_bench.models import INPUT_NAMES, OUTPUT_NAMES
from rethined_bench.settings import setting
from rethined_bench.toolchains import COREML_COMPUTE_UNITS, coremltools_module

from .base import ExportRequest, Exporter

DEFAULT_DEPLOYMENT_TARGET = "iOS16"
DEFAULT_COMPUTE_UNITS = "ALL"
MIN_MLPROGRAM_SPEC = 6  # iOS15 / macOS12: the first ML Program release
FP16_MAX = 65504.0
CAPTURE = "torch.export + run_decompositions({})"
FP16_EMULATION = ("PyTorch on CPU: weights, inputs and every torch op's result rounded to fp16, arithmetic inside an "
                  "op in fp32; a device that also accumulates in fp16 can err more")


class CoreMLConversionError(UnsupportedExportError):
    """The model cannot be captured or converted as it stands; the message is the tool's reason."""


class CoreMLValidationError(RbenchError):
    """The converted package violates a structural or fp16-safety check; the message lists the violations."""


# --------------------------------------------------------------------------------------------------- conversion

def convert_to_mlpackage(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, *,
                         deployment_target: str, precision: str, metadata: dict[str, str] | None = None
                         ) -> list[str]:
    """Convert ``model`` (pipeline contract: image, mask → inpainted) to an ML Program at ``path``.

    Returns the converter's warnings (coremltools logger); its progress bars and import noise are dropped.
    Raises :class:`CoreMLConversionError` with the reason if ``torch.export`` or coremltools refuses the model.
    """
    ct = coremltools_module()
    target = deployment_target_enum(deployment_target)
    with _quiet():
        try:
            program = torch.export.export(model.eval(), example).run_decompositions({})
        except Exception as exc:  # torch.export raises many types (Unsupported, UserError, RuntimeError...)
            raise CoreMLConversionError(f"torch.export cannot capture the model: {_reason(exc)}") from exc
    inputs = [ct.TensorType(name=name, shape=tuple(tensor.shape), dtype=np.float32)
              for name, tensor in zip(INPUT_NAMES, example)]
    outputs = [ct.TensorType(name=name, dtype=np.float32) for name in OUTPUT_NAMES]
    with _quiet() as converter_warnings:
        try:
            mlmodel = ct.convert(program, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                 minimum_deployment_target=target, compute_precision=_ct_precision(ct, precision),
                                 skip_model_load=True)
        except Exception as exc:  # coremltools raises ValueError, NotImplementedError, AssertionError, ...
            raise CoreMLConversionError(f"coremltools {ct.__version__} cannot convert the model: "
                                        f"{_reason(exc)}") from exc
    for key, value in (metadata or {}).items():
        mlmodel.user_defined_metadata[key] = value
    mlmodel.save(str(path))
    return converter_warnings


def deployment_target_enum(name: str) -> Any:
    """``"iOS16"`` → ``coremltools.target.iOS16``; ML Program needs iOS15 / macOS12 or newer."""
    ct = coremltools_module()
    target = ct.target.__members__.get(name)
    if target is None or target.value < MIN_MLPROGRAM_SPEC:
        allowed = [n for n, t in ct.target.__members__.items()
                   if t.value >= MIN_MLPROGRAM_SPEC and n.startswith(("iOS", "macOS"))]
        raise RbenchError(f"Core ML deployment target {name!r} is not an ML Program target; "
                          f"choose one of: {', '.join(allowed)}")
    return target


def _ct_precision(ct: ModuleType, precision: str) -> Any:
    return {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[precision]


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class _WarningLog(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if message not in self.sink:
            self.sink.append(message)


@contextlib.contextmanager
def _quiet() -> Iterator[list[str]]:
    """Collect coremltools' log warnings; drop stderr (tqdm progress bars) and Python warnings."""
    collected: list[str] = []
    logger = logging.getLogger("coremltools")
    handler, propagate = _WarningLog(collected), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield collected
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# ------------------------------------------------------------------------------------------ inspection (Linux)

def load_program(path: Path) -> tuple[Any, Any]:
    """``(spec, MIL program)`` of a package, read without Core ML's runtime (works on Linux)."""
    ct = coremltools_module()
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    try:
        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
        spec = mlmodel.get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise CoreMLValidationError(f"{path.name} is a {spec.WhichOneof('Type')} model, not an ML Program")
        program = load_mil(spec, spec.specificationVersion, mlmodel.weights_dir)
    except CoreMLValidationError:
        raise
    except Exception as exc:  # protobuf / milproto errors
        raise CoreMLValidationError(f"the MIL program of {path.name} does not load: {_reason(exc)}") from exc
    return spec, program


def operations(program: Any) -> Iterator[Any]:
    """Every op of every function of a MIL program."""
    for function in program.functions.values():
        yield from operations_of(function)


def operations_of(block: Any) -> Iterator[Any]:
    """Every op of one MIL function or block, nested blocks (cond, while_loop) included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from operations_of(inner)


def _dtype_name(dtype: Any) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(dtype) or str(dtype)


def op_histogram(program: Any) -> dict[str, int]:
    """Op count by type, constants excluded (they are weights and attributes, not compute)."""
    counts = collections.Counter(op.op_type for op in operations(program) if op.op_type != "const")
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def ops_by_dtype(program: Any) -> dict[str, int]:
    """Non-const op count by the dtype of their first output (fp16 / fp32 / int32 / bool)."""
    counts = collections.Counter(_dtype_name(op.outputs[0].dtype) for op in operations(program)
                                 if op.op_type != "const" and op.outputs)
    return dict(sorted(counts.items()))


def const_bytes_by_dtype(program: Any) -> dict[str, int]:
    """Bytes held in constants (weights included) by dtype: where the package's size goes."""
    counts: collections.Counter[str] = collections.Counter()
    for op in operations(program):
        if op.op_type == "const" and isinstance(op.outputs[0].val, (np.ndarray, np.generic)):
            counts[_dtype_name(op.outputs[0].dtype)] += op.outputs[0].val.nbytes
    return dict(sorted(counts.items()))


# ------------------------------------------------------------------------------------------ structural checks
# Each takes a spec or a MIL program and returns a list of violations (empty = passes), so tests can plant them.

def io_violations(spec: Any, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]]
                  ) -> list[str]:
    """Inputs and outputs: exactly the declared names, fixed shapes, fp32 multiarrays."""
    from coremltools.proto import FeatureTypes_pb2

    fp32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    data_type_name = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    violations = []
    for kind, features, declared in (("input", spec.description.input, inputs),
                                     ("output", spec.description.output, outputs)):
        names = [feature.name for feature in features]
        if names != list(declared):
            violations.append(f"{kind}s are {names}, declared {list(declared)}")
            continue
        for feature in features:
            if feature.type.WhichOneof("Type") != "multiArrayType":
                violations.append(f"{kind} {feature.name} is a {feature.type.WhichOneof('Type')}, not a multiarray")
                continue
            array = feature.type.multiArrayType
            shape = tuple(array.shape)
            if shape != tuple(declared[feature.name]):
                violations.append(f"{kind} {feature.name} has shape {shape}, declared {declared[feature.name]}")
            flexibility = array.WhichOneof("ShapeFlexibility")
            if flexibility is not None:
                violations.append(f"{kind} {feature.name} has a flexible shape ({flexibility})")
            if array.dataType != fp32:
                violations.append(f"{kind} {feature.name} is {data_type_name(array.dataType)}, declared FLOAT32")
    return violations


def precision_violations(program: Any, precision: str) -> list[str]:
    """Ops computing in a float dtype other than ``precision`` ("fp16" or "fp32").

    Declared exceptions: a ``cast`` reading a function input (fp32 input → fp16) or producing a function output
    (fp16 → fp32 output). Anything else is an island, e.g. an op coremltools kept in fp32 because a constant
    overflows fp16.
    """
    from coremltools.converters.mil.mil import types

    violations = []
    for function in program.functions.values():
        boundary = {id(var) for var in chain(function.inputs.values(), function.outputs)}
        for op in operations_of(function):
            if op.op_type == "const":
                continue
            if op.op_type == "cast" and (id(op.x) in boundary or id(op.outputs[0]) in boundary):
                continue
            for var in op.outputs:
                dtype = _dtype_name(var.dtype)
                if types.is_float(var.dtype) and dtype != precision:
                    violations.append(f"op {op.name} ({op.op_type}) computes in {dtype}, not {precision}")
    return violations


def supported_ops(deployment_target: str) -> frozenset[str]:
    """Op types the deployment target's opset has, read from coremltools' MIL op registry."""
    target = deployment_target_enum(deployment_target)  # imports coremltools quietly first
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    newest = SSAOpRegistry.SUPPORTED_OPSET_VERSIONS[-1]  # later targets inherit the newest opset
    key = min(target, newest)
    return frozenset(op_type for op_type, versions in SSAOpRegistry.core_ops.items() if key in versions)


def opset_violations(program: Any, deployment_target: str) -> list[str]:
    """Op types outside the deployment target's opset."""
    supported = supported_ops(deployment_target)
    unsupported = collections.Counter(op.op_type for op in operations(program) if op.op_type not in supported)
    return [f"op {op_type} (x{count}) is not in the {deployment_target} opset"
            for op_type, count in sorted(unsupported.items())]


def spec_version_violations(spec_version: int, deployment_target: str) -> list[str]:
    """A spec version newer than the deployment target's OS can load."""
    target = deployment_target_enum(deployment_target)
    if spec_version > target.value:
        return [f"spec version {spec_version} is newer than {deployment_target} (spec version {target.value}) "
                "can load"]
    return []


def fp16_range_violations(program: Any) -> list[str]:
    """Constants (weights included) beyond fp16's ±65504 or non-finite: they become inf in fp16 (attention masks
    like ±1e8 are the usual culprit) or made coremltools keep an op in fp32."""
    from coremltools.converters.mil.mil import types

    violations = []
    for op in operations(program):
        var = op.outputs[0] if op.op_type == "const" else None
        if var is None or not types.is_float(var.dtype) or var.val is None:
            continue
        value = np.asarray(var.val, dtype=np.float64)
        finite = np.isfinite(value)
        if not finite.all():
            violations.append(f"const {op.name} holds {int((~finite).sum())} non-finite value(s)")
        peak = float(np.abs(value[finite]).max(initial=0.0))
        if peak > FP16_MAX:
            violations.append(f"const {op.name} holds {peak:.6g}, beyond fp16's ±{FP16_MAX:g}")
    return violations


@dataclass(frozen=True)
class Expectation:
    """What an export declared: I/O shapes, compute precision, deployment target."""

    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    precision: str
    deployment_target: str


def validate_package(path: Path, expected: Expectation) -> dict[str, Any]:
    """Run every structural check on the package at ``path``; raise :class:`CoreMLValidationError` listing the
    violations, else return the program's statistics for the manifest."""
    spec, program = load_program(path)
    violations = (io_violations(spec, expected.inputs, expected.outputs)
                  + precision_violations(program, expected.precision)
                  + opset_violations(program, expected.deployment_target)
                  + spec_version_violations(spec.specificationVersion, expected.deployment_target))
    range_issues = fp16_range_violations(program)
    if expected.precision == "fp16":
        violations += range_issues
    if violations:
        shown = "; ".join(violations[:8]) + (f"; and {len(violations) - 8} more" if len(violations) > 8 else "")
        raise CoreMLValidationError(f"{path.name} fails the Core ML checks: {shown}")
    histogram = op_histogram(program)
    return {
        "spec_version": spec.specificationVersion,
        "opset": spec.mlProgram.functions["main"].opset,
        "op_count": sum(histogram.values()),
        "ops": histogram,
        "ops_by_dtype": ops_by_dtype(program),
        "const_bytes_by_dtype": const_bytes_by_dtype(program),
        "fp16_range_issues": range_issues,  # only ever non-empty for fp32 programs (fp16 ones fail above)
    }


# ------------------------------------------------------------------------------------------ fp16 emulation

class _Fp16Rounding(TorchFunctionMode):
    """Rounds every floating-point result of a torch function to fp16 (held in its own dtype), and notes the
    first function whose result exceeds fp16's range before rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.max_abs = 0.0
        self.overflow: str | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        result = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", str(func))
        if isinstance(result, (tuple, list)):  # tuple, list, torch.return_types (topk, max, ...)
            return type(result)([self._round(item, name) for item in result])
        return self._round(result, name)

    def _round(self, value: Any, name: str) -> Any:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() == 0:
            return value
        peak = float(value.detach().abs().amax())
        if not peak <= FP16_MAX and self.overflow is None:  # also catches NaN
            self.overflow = f"{name} (|x| up to {peak:.6g})"
        if math.isfinite(peak):
            self.max_abs = max(self.max_abs, peak)
        return value.to(torch.float16).to(value.dtype)


def _fp16_rounded(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float16).to(tensor.dtype)


def fp16_error_bound(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Error of the fp16 program against fp32, emulated on CPU (see ``FP16_EMULATION``).

    Raises :class:`CoreMLValidationError` if an activation leaves fp16's range (it would be inf on the device).
    """
    import copy

    emulated = copy.deepcopy(model).eval()
    with torch.inference_mode():
        for tensor in chain(emulated.parameters(), emulated.buffers()):
            if tensor.is_floating_point():
                tensor.data = _fp16_rounded(tensor.data)
        reference = model(*example)
        rounding = _Fp16Rounding()
        with rounding:
            output = emulated(*(_fp16_rounded(tensor) for tensor in example))
    if rounding.overflow is not None:
        raise CoreMLValidationError(f"fp16 overflow: {rounding.overflow} exceeds ±{FP16_MAX:g} "
                                    "(it would be inf on the device)")
    return compare(reference.numpy(), output.numpy()) | {"max_abs_activation": rounding.max_abs,
                                                        "method": FP16_EMULATION}


# ------------------------------------------------------------------------------------------ the target

@dataclass(frozen=True)
class CoreMLSettings:
    deployment_target: str = setting(DEFAULT_DEPLOYMENT_TARGET, key="coreml_deployment_target",
                                     help="minimum deployment target (an ML Program target: iOS15 or newer)")
    compute_units: str = setting(DEFAULT_COMPUTE_UNITS, help="recorded in the package's metadata and manifest")

    def __post_init__(self) -> None:
        if self.compute_units not in COREML_COMPUTE_UNITS:
            raise RbenchError(f"Core ML compute units must be one of {', '.join(COREML_COMPUTE_UNITS)}, "
                              f"not {self.compute_units!r}")


class CoreMLExporter(Exporter):
    """``rbench export --target coreml``: one ``.mlpackage`` per (model, resolution, precision)."""

    target = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp16", "fp32")
    settings_class = CoreMLSettings
    local_runner = "local-coreml"

    def convert(self, model: nn.Module, request: ExportRequest, path: Path,
                example: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
        deployment_target = str(request.options["deployment_target"])
        compute_units = str(request.options["compute_units"])
        started = time.perf_counter()
        converter_warnings = convert_to_mlpackage(
            model, example, path, deployment_target=deployment_target, precision=request.precision,
            metadata={"rbench.artifact": request.name, "rbench.compute_units": compute_units})
        convert_seconds = time.perf_counter() - started
        shapes = dict(zip(INPUT_NAMES, (tuple(t.shape) for t in example)))
        expected = Expectation(inputs=shapes, outputs={OUTPUT_NAMES[0]: shapes[INPUT_NAMES[0]]},
                               precision=request.precision, deployment_target=deployment_target)
        statistics = validate_package(path, expected)
        fields: dict[str, Any] = {"coreml": {
            "format": "mlprogram",
            "capture": CAPTURE,
            "deployment_target": deployment_target,
            "compute_precision": request.precision,
            "compute_units": compute_units,
            **statistics,
            "package_bytes": _package_bytes(path),
            "convert_seconds": round(convert_seconds, 3),
            "converter_warnings": converter_warnings,
        }}
        if request.precision == "fp16":
            fields["fp16_error_bound"] = fp16_error_bound(model, example)
        return fields

    def graph(self, path: Path) -> dict[str, Any]:
        """The MIL program's op histogram and constant bytes by dtype (readable on Linux)."""
        _, program = load_program(path)
        histogram = op_histogram(program)
        return {"format": "mlprogram", "node_count": sum(histogram.values()), "ops": histogram,
                "weight_bytes": const_bytes_by_dtype(program)}


def _package_bytes(path: Path) -> dict[str, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    weights = sum(p.stat().st_size for p in files if "weights" in p.parts)
    return {"total": sum(p.stat().st_size for p in files), "weights": weights}


# ------------------------------------------------------------------------------------------ multifunction

def bundle_resolutions(packages: Sequence[Path], destination: Path) -> Path:
    """One multifunction ``.mlpackage`` holding several single-resolution packages as functions ``main_<H>x<W>``
    (the first is the default), with the weights they share stored once.

    Multifunction packages are spec version 9: they need iOS18 / macOS15 (A12 devices reach iOS 18). Load one
    resolution with ``MLModel(path, function_name="main_2048x2048")``.
    """
    ct = coremltools_module()
    descriptor = ct.utils.MultiFunctionDescriptor()
    names = []
    for package in packages:
        image = ct.utils.load_spec(str(package)).description.input[0].type.multiArrayType
        name = f"main_{image.shape[-2]}x{image.shape[-1]}"
        descriptor.add_function(str(package), "main", name)
        names.append(name)
    if not names:
        raise RbenchError("bundle_resolutions needs at least one package")
    descriptor.default_function_name = names[0]
    with _quiet():
        ct.utils.save_multifunction(descriptor, str(destination))
    return destination
