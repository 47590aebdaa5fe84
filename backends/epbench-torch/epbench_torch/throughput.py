"""Optional measurement methods of the torch backend, used by `epbench run speed`
(epbench.measurements.peak; the capability protocols of epbench.core.protocols).

    op_seconds(op, *, dtype, device, min_seconds)   seconds of one GEMM / convolution (an
                                                    epbench.core.flops op tuple) with torch
    memory_stats(device, *, reset=False)            the CUDA caching allocator's statistics
    profile_summary(fn, *, device, folder)          torch.profiler's per-op table of `fn()`

Ops run the way the networks run them: convolutions on channels-last tensors, full precision on CUDA
(no TF32, as `adapter.TorchNetwork`), no autograd. On the CPU an op is timed with torch's thread
count and with one thread (the networks run small per-step ops on one thread), the faster wins.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from .adapter import like

CHANNELS_LAST = torch.channels_last


def _best(call: Callable[[], Any], sync: Callable[[], None], min_seconds: float) -> float:
    """Seconds of one call: calibrate n calls ≥ min_seconds, best of three runs of n calls."""
    call()
    sync()
    start = time.perf_counter()
    call()
    sync()
    n = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-7)))
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            call()
        sync()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def _op_call(op: tuple, kind: dict[str, Any]) -> Callable[[], Any] | None:
    """A closure running `op` once on fresh random operands, or None for an unknown op."""
    name = op[0]
    if name == "gemm":
        _, m, k, n = op
        a, b = torch.rand(m, k, **kind), torch.rand(k, n, **kind)
        out = torch.empty(m, n, **kind)
        return lambda: torch.mm(a, b, out=out)
    if name not in ("conv", "conv_t", "conv_w"):
        return None
    _, batch, c, h, w, o, k, p = op
    x = torch.rand(batch, c, h, w, **kind).contiguous(memory_format=CHANNELS_LAST)
    kernel = torch.rand(o, c, k, k, **kind).contiguous(memory_format=CHANNELS_LAST)
    grad = torch.rand(batch, o, h + 2 * p - k + 1, w + 2 * p - k + 1, **kind)
    grad = grad.contiguous(memory_format=CHANNELS_LAST)
    if name == "conv":
        return lambda: F.conv2d(x, kernel, padding=p)
    if name == "conv_t":
        return lambda: F.conv_transpose2d(grad, kernel, padding=p)
    return lambda: conv2d_weight(x, kernel.shape, grad, padding=p)


def op_seconds(op: tuple, *, dtype: str, device: str, min_seconds: float = 0.01) -> float | None:
    """Seconds of one `op` on `device` in `dtype`, steady state; None for an unknown op kind."""
    dev = torch.device(device)
    kind = like(dtype, device)
    if dev.type == "cuda":

        def sync() -> None:
            torch.cuda.synchronize(dev)

    else:

        def sync() -> None:
            return None

    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        call = _op_call(op, kind)
        if call is None:
            return None
        seconds = _best(call, sync, min_seconds)
        threads = torch.get_num_threads()
        if dev.type == "cpu" and threads > 1:
            torch.set_num_threads(1)
            try:
                seconds = min(seconds, _best(call, sync, min_seconds))
            finally:
                torch.set_num_threads(threads)
    return seconds


def memory_stats(device: str, *, reset: bool = False) -> dict[str, Any] | None:
    """{"current_bytes", "peak_bytes", "resettable"} of the CUDA caching allocator (the peak since
    the last reset), reset afterwards when `reset`; None on the CPU."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    out = {
        "current_bytes": int(torch.cuda.memory_allocated()),
        "peak_bytes": int(torch.cuda.max_memory_allocated()),
        "resettable": True,
    }
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return out


def profile_summary(fn: Callable[[], Any], *, device: str, folder: Path) -> str:
    """Run `fn()` under torch.profiler; the per-op table sorted by self time (also written to
    `folder`/torch-profile.txt)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "torch-profile.txt").write_text(table + "\n", encoding="utf-8")
    return table
