"""epbench: Equilibrium Propagation against BPTT in convergent RNNs with static input."""

from epbench.plugins.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
