"""Layers several models share (timm's ``layers/`` is the model): the FFC family and the matmul DFT."""

from .dft import RealDFT2d, dft_tables, irfft2, rfft2
from .ffc import (
    FFC, FFT_MODES, NORMS, FFCLayer, FFCResnetBlock, FourierUnit, SpectralTransform, UnusedBatchNorm, fold_batchnorm_into_sum,
    split_channels,
)

__all__ = [
    "FFC", "FFT_MODES", "NORMS", "FFCLayer", "FFCResnetBlock", "FourierUnit", "RealDFT2d", "SpectralTransform", "UnusedBatchNorm",
    "dft_tables", "fold_batchnorm_into_sum", "irfft2", "rfft2", "split_channels",
]
