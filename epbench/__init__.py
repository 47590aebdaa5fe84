"""epbench: Equilibrium Propagation against BPTT in convergent RNNs with static input."""

from epbench.core.version import __version__
from epbench.plugins.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
