"""rbench: export and latency benchmarking of image-inpainting networks across vendors."""

from .models import create_model, get_model_spec, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "get_model_spec", "list_models"]
