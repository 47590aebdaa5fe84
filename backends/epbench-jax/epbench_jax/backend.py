"""The JAX backend (implements `epbench.core.protocols.Backend`). jax is imported on first use only,
so loading the plugin (every `epbench` command does) stays cheap.

What comes in: a `ModelSpec`, a dtype name and a device name, after the core's own checks
(`epbench.core.support.support_reason`: the names, and the `model_fields` allow-list). What goes
out: a reason this backend cannot run the combination (`supports`), or a
`epbench_jax.compiled.JaxNetwork` over the model's family (`build`).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from epbench.core.errors import BackendError
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason

from . import throughput
from .throughput import PLATFORMS
from .throughput import jax_device as _jax_device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Every ModelSpec field this backend understands (epbench.core.support: an allow-list).
MODEL_FIELDS = frozenset(
    "setting inputs sizes input_to activation epsilon clamp conv feedback_angle"
    " cell weight_scale"  # the standard RNN baselines; scaled initial weights
    " output_derivative".split()  # the EB output update of the paper's code
)


class JaxBackend:
    """Builds `epbench_jax.compiled.JaxNetwork`s over one model family — `network` (tied, fully
    connected), `asymmetric` (feedback weights) or `conv` (P-conv, docs/theory.md §3.4): whole
    phases under `jax.jit`, CPU or GPU."""

    name = "jax"
    model_fields = MODEL_FIELDS
    # Optional capabilities (epbench.core.protocols: OpTimingBackend, MemoryStatsBackend,
    # ProfilerBackend), used by `epbench run speed`.
    op_seconds = staticmethod(throughput.op_seconds)
    memory_stats = staticmethod(throughput.memory_stats)
    profile_summary = staticmethod(throughput.profile_summary)

    def versions(self) -> dict[str, str]:
        out = {}
        for dist in ("jax", "jaxlib", "epbench-jax"):
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = "unknown"
        return out

    def device_info(self, device: str) -> str:
        found = _jax_device(device)
        if found is None:
            return f"{device} (not available to jax)"
        if found.platform == "cpu":
            return f"{_cpu_name()} (jax cpu)"
        return f"{found.device_kind} (jax {found.platform})"

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        """None when `build` can run (model, dtype, device); otherwise why not (a skip reason):
        no jax device of that platform, or a model its family does not run."""
        if _jax_device(device) is None:
            return f"jax backend: no jax {PLATFORMS[device]} device (install jax[cuda12] for cuda)"
        reason = family_of(model).unsupported(model)
        return None if reason is None else f"jax backend: {reason}"

    def build(self, model: ModelSpec, *, dtype: str, device: str):
        """A `JaxNetwork` for `model` in `dtype` on `device`; BackendError with the reason
        (`epbench.core.support.support_reason`) when it cannot run."""
        reason = support_reason(self, model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        from .compiled import JaxNetwork
        from .flow import state_jvp_of

        family = family_of(model)
        net = JaxNetwork(
            model, family=family, dtype=dtype, device=device, jax_device=_jax_device(device)
        )
        net.state_jvp = state_jvp_of(net)  # the FlowNetwork capability (flow.py)
        return net

    def build_seeds(self, model: ModelSpec, *, dtype: str, device: str, seeds: int):
        """A `seeds.JaxSeedNetwork` of `seeds` seeds of `model` (the optional capability
        `epbench.core.protocols.SeedBatchingBackend`), or None where seeds are not batched
        (`seeds.batches_seeds`)."""
        reason = support_reason(self, model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        from .seeds import JaxSeedNetwork, batches_seeds

        if seeds < 2 or not batches_seeds(model):
            return None
        return JaxSeedNetwork(
            model,
            family=family_of(model),
            dtype=dtype,
            device=device,
            jax_device=_jax_device(device),
            seeds=seeds,
        )


def family_of(model: ModelSpec):
    """The `compiled.Family` that runs `model`: `conv` (conv layers), `asymmetric` (feedback
    weights) or `network` (tied, fully connected); `rnn` for the standard RNN baselines
    (`model.cell`). Imports jax."""
    if model.cell != "phi":
        from .rnn import FAMILY
    elif model.conv is not None:
        from .conv import FAMILY
    elif model.feedback_angle is not None:
        from .asymmetric import FAMILY
    else:
        from .network import FAMILY
    return FAMILY
