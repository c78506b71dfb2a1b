"""vlda: unsupervised domain adaptation with vision-language models."""

from vlda._compat import apply_torchvision_shim

apply_torchvision_shim()

__version__ = "0.1.0"
