"""epbench-jax: the JAX backend of epbench (whole phases compiled with jax.jit, CPU and GPU)."""

from .backend import JaxBackend

__all__ = ["JaxBackend"]
