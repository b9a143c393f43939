"""Deploy transforms: BatchNorm folding, branch re-parameterisation, and a checked ``deploy()``."""

from .deploy import DEPLOY_ATOL, deploy, deploy_leftovers
from .fuse_bn import fold_bn_into_kernel, fuse_batchnorm
from .reparameterize import Reparameterizable, identity_kernel, pad_kernel_to, reparameterize_model

__all__ = [
    "DEPLOY_ATOL", "Reparameterizable", "deploy", "deploy_leftovers", "fold_bn_into_kernel", "fuse_batchnorm",
    "identity_kernel", "pad_kernel_to", "reparameterize_model",
]
