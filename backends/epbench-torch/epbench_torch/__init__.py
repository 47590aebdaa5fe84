"""PyTorch backend of epbench: fully connected convergent RNNs in the EB and P settings."""

from .backend import TorchBackend
from .network import TorchNetwork

__all__ = ["TorchBackend", "TorchNetwork"]
