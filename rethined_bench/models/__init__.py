"""Inpainting models: the registry plus one module per model."""

from .pipeline import INPUT_NAMES, OUTPUT_NAMES, InpaintingPipeline, composite
from .registry import (
    BENCH_RESOLUTIONS,
    ModelSpec,
    ResolutionConstraint,
    create_model,
    get_model_spec,
    list_models,
    load_weights,
    paper_claims,
    register_model,
    sweep_models,
)

__all__ = [
    "BENCH_RESOLUTIONS", "INPUT_NAMES", "OUTPUT_NAMES", "InpaintingPipeline", "ModelSpec", "ResolutionConstraint",
    "composite", "create_model", "get_model_spec", "list_models", "load_weights", "paper_claims", "register_model",
    "sweep_models",
]
