"""The JAX backend (implements `epbench.core.protocols.Backend`). jax is imported on first use only, so
loading the plugin (every `epbench` command does) stays cheap."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from epbench.core.errors import BackendError
from epbench.core.spec import ACTIVATIONS, DTYPES, ModelSpec

from . import throughput

PLATFORMS = {"cpu": "cpu", "cuda": "gpu"}  # epbench device → jax platform


def _jax_device(device: str):
    """The first jax device of `device`'s platform, or None when jax has none."""
    import jax

    try:
        return jax.devices(PLATFORMS[device])[0]
    except (KeyError, RuntimeError):
        return None


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
    {
        "setting",
        "inputs",
        "sizes",
        "input_to",
        "activation",
        "epsilon",
        "clamp",
        "conv",
        "feedback_angle",
    }
)


class JaxBackend:
    """Builds `epbench_jax.compiled.JaxNetwork`s over one model family — `network` (tied, fully
    connected), `asymmetric` (feedback weights) or `conv` (P-conv): whole phases under `jax.jit`,
    CPU or GPU."""

    name = "jax"
    model_fields = MODEL_FIELDS
    # Optional measurement methods (epbench.measurements.peak, `epbench run speed`).
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
        if device not in PLATFORMS:
            return f"jax backend: unknown device {device!r}; known: {', '.join(PLATFORMS)}"
        if dtype not in DTYPES:
            return f"jax backend: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}"
        if model.setting not in ("EB", "P"):
            return f"jax backend: unknown setting {model.setting!r}; known: EB, P"
        if model.activation not in ACTIVATIONS:
            return f"jax backend: unknown activation {model.activation!r}"
        if model.conv is not None and model.setting != "P":
            return "jax backend: conv models run in the P setting only (PAPER.md §3)"
        if model.conv is not None and model.feedback_angle is not None:
            return "jax backend: asymmetric feedback is implemented for fully connected models"
        if _jax_device(device) is None:
            return f"jax backend: no jax {PLATFORMS[device]} device (install jax[cuda12] for cuda)"
        return None

    def build(self, model: ModelSpec, *, dtype: str, device: str):
        reason = self.supports(model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        from .compiled import JaxNetwork
        from .rtrl import JaxRtrlNetwork  # JaxNetwork + the optional rtrl_gradient

        if model.conv is not None:
            from .conv import FAMILY
        elif model.feedback_angle is not None:  # independent feedback weights
            from .asymmetric import FAMILY
        else:
            from .network import FAMILY
        cls = JaxNetwork if model.conv is not None else JaxRtrlNetwork
        return cls(model, family=FAMILY, dtype=dtype, device=device, jax_device=_jax_device(device))
