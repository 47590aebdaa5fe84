"""Optional measurement methods of the jax backend, used by `epbench run speed`
(epbench.measurements.peak; the capability protocols of epbench.core.protocols).

    op_seconds(op, *, dtype, device, min_seconds)   seconds of one GEMM / convolution (an
                                                    epbench.core.flops op tuple) under jax.jit
    memory_stats(device, *, reset=False)            the device allocator's statistics (GPU)
    profile_summary(fn, *, device, folder)          a jax.profiler trace of `fn()`

jax is imported on first use only (the plugin loads with every `epbench` command). An op is timed
the way the networks run it: inside one jitted `lax.fori_loop` of n iterations (no dispatch per
op), at full matmul precision (no TF32), each iteration fed a scalar of the previous result so
that XLA cannot hoist the loop-invariant product out of the loop (one extra element-wise add over
the smaller operand).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

PLATFORMS = MappingProxyType({"cpu": "cpu", "cuda": "gpu"})  # epbench device → jax platform


def jax_device(device: str):
    """The first jax device of `device`'s platform, or None when jax has none (imports jax)."""
    import jax

    try:
        return jax.devices(PLATFORMS[device])[0]
    except (KeyError, RuntimeError):
        return None


def _op(op: tuple, dtype: str) -> tuple[Callable, tuple] | None:
    """(f(a, b) → array, (a, b) numpy operands) for `op`, or None for an unknown op kind.

    Convolutions in NHWC / HWIO, the layout of `epbench_jax.conv` (XLA's CPU convolution falls
    back to a naive loop nest for NCHW inside a loop); the transposed convolution as the
    convolution with the flipped kernel, the kernel gradient as one contraction over the k²
    shifted views of the input, the forms the network uses."""
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    rng = np.random.default_rng(0)
    kind = op[0]
    if kind == "gemm":
        _, m, k, n = op
        return (lambda a, b: a @ b), (rng.random((m, k)), rng.random((k, n)))
    if kind not in ("conv", "conv_t", "conv_w"):
        return None
    _, batch, c, h, w, o, k, p = op
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(x, kernel, pad):
        return lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2, dimension_numbers=dims)

    def conv_t(g, kernel):  # (B, h', w', O) → (B, H, W, C)
        return conv(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), k - 1 - p)

    def conv_w(x, g):  # Σ over batch and positions of x's shifted views times g: (k, k, C, O)
        x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        views = jnp.stack([x[:, i : i + ho, j : j + wo] for i in range(k) for j in range(k)])
        return jnp.einsum("kbhwi,bhwo->kio", views, g)

    x, kernel = rng.random((batch, h, w, c)), rng.random((k, k, c, o))
    grad = rng.random((batch, ho, wo, o))
    if kind == "conv":
        return (lambda a, b: conv(a, b, p)), (x, kernel)
    if kind == "conv_t":
        return conv_t, (grad, kernel)
    return conv_w, (x, grad)


def op_seconds(op: tuple, *, dtype: str, device: str, min_seconds: float = 0.01) -> float | None:
    """Seconds of one `op` on `device` in `dtype`, steady state; None for an unknown op kind or
    a device jax does not have."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    dev = jax_device(device)
    built = _op(op, dtype)
    if dev is None or built is None:
        return None
    f, operands = built
    with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision("highest"):
        a, b = (jax.device_put(np.asarray(v, dtype=dtype), dev) for v in operands)
        small_first = a.size <= b.size

        def body(_, carry):
            a, b, acc = carry
            out = f(a, b)
            tick = out.ravel()[0] * 0.0
            a, b = (a + tick, b) if small_first else (a, b + tick)
            return a, b, acc + out.ravel()[-1]

        @jax.jit
        def loop(n, a, b):
            return lax.fori_loop(0, n, body, (a, b, jnp.zeros((), a.dtype)))[2]

        def run(n: int) -> float:
            start = time.perf_counter()
            loop(n, a, b).block_until_ready()
            return time.perf_counter() - start

        run(1)  # compile
        n = max(1, math.ceil(min_seconds / max(run(1), 1e-7)))
        return min(run(n) for _ in range(3)) / n


def memory_stats(device: str, *, reset: bool = False) -> dict[str, Any] | None:
    """{"current_bytes", "peak_bytes", "resettable": False} of the device allocator (the peak
    since the process started: jax cannot reset it); None on the CPU or without statistics."""
    dev = jax_device(device)
    if dev is None or dev.platform == "cpu":
        return None
    stats = dev.memory_stats() or {}
    if "bytes_in_use" not in stats:
        return None
    return {
        "current_bytes": int(stats["bytes_in_use"]),
        "peak_bytes": int(stats.get("peak_bytes_in_use", stats["bytes_in_use"])),
        "resettable": False,
    }


def profile_summary(fn: Callable[[], Any], *, device: str, folder: Path) -> str:
    """Run `fn()` under `jax.profiler.trace`; the trace (TensorBoard / Perfetto) goes to
    `folder`/jax-trace. Returns where it went."""
    import jax

    target = folder / "jax-trace"
    target.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(target)):
        fn()
    return f"jax profiler trace in {target} (open with TensorBoard's profile plugin or Perfetto)"
