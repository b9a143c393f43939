"""rbench: export and latency benchmarking of image-inpainting networks across vendors.

The model registry's functions are imported on first use: the measuring worker processes import this package and
should not pay for torch.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "get_model_spec", "list_models"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "get_model_spec", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'rethined_bench' has no attribute {name!r}")
