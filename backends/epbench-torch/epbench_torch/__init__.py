"""PyTorch backend of epbench: convergent RNNs (fully connected, asymmetric, P-conv) in the EB and
P settings, on the CPU or a CUDA device."""

from .adapter import TorchNetwork
from .backend import TorchBackend

__all__ = ["TorchBackend", "TorchNetwork"]
