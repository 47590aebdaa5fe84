"""The torch `Backend` (epbench.core.protocols.Backend): versions, device description, support, build."""

from __future__ import annotations

import platform

import torch

from epbench.core.errors import BackendError
from epbench.core.spec import ACTIVATIONS, DTYPES, SETTINGS, ModelSpec

from . import throughput
from .asymmetric import TorchAsymmetricNetwork
from .conv import TorchConvNetwork
from .network import TorchNetwork
from .reference_conv import ReferenceConvNetwork, reference_unsupported
from .rtrl import TorchRtrlNetwork

DEVICES = ("cpu", "cuda")


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


class TorchBackend:
    """Builds `TorchNetwork`s for fully connected models in the EB and P settings and
    `TorchConvNetwork`s for P-setting conv models (PAPER.md §3)."""

    name = "torch"
    model_fields = MODEL_FIELDS
    # Optional measurement methods (epbench.measurements.peak, `epbench run speed`).
    op_seconds = staticmethod(throughput.op_seconds)
    memory_stats = staticmethod(throughput.memory_stats)
    profile_summary = staticmethod(throughput.profile_summary)

    def versions(self) -> dict[str, str]:
        """Framework versions for records: torch, and the CUDA toolkit torch was built with."""
        return {"torch": torch.__version__, "cuda": torch.version.cuda or "none"}

    def device_info(self, device: str) -> str:
        """A human description of `device` ("cpu" or "cuda") for records."""
        if device == "cuda":
            if not torch.cuda.is_available():
                return "cuda (not available)"
            return torch.cuda.get_device_name(torch.cuda.current_device())
        cpu = platform.processor() or platform.machine() or "cpu"
        capability = torch.backends.cpu.get_cpu_capability()
        return f"{cpu}, {torch.get_num_threads()} torch threads, {capability}"

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        """None when `build` can run (model, dtype, device); otherwise why not (a skip reason)."""
        if model.setting not in SETTINGS:
            return (
                f"torch backend: unknown setting {model.setting!r} (known: {', '.join(SETTINGS)})"
            )
        if model.activation not in ACTIVATIONS:
            return f"torch backend: unknown activation {model.activation!r}"
        if dtype not in DTYPES:
            return f"torch backend: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})"
        if device not in DEVICES:
            return f"torch backend: unknown device {device!r} (known: {', '.join(DEVICES)})"
        if device == "cuda" and not torch.cuda.is_available():
            return "torch backend: CUDA is not available to this torch build or machine"
        if model.conv is not None and model.setting != "P":
            return "torch backend: conv models run in the P setting only (PAPER.md §3)"
        if model.conv is not None and model.feedback_angle is not None:
            return "torch backend: asymmetric feedback is implemented for fully connected models"
        return None

    def reference_network(
        self, model: ModelSpec, *, dtype: str, device: str
    ) -> ReferenceConvNetwork | None:
        """The paper's implementation re-created for `model` (epbench.measurements.reference, optional method):
        the paper's P-conv geometry only (reference_conv.py); None for any other model."""
        if self.supports(model, dtype=dtype, device=device) or reference_unsupported(model):
            return None
        return ReferenceConvNetwork(model, dtype=dtype, device=device)

    def build(
        self, model: ModelSpec, *, dtype: str, device: str
    ) -> TorchNetwork | TorchConvNetwork:
        """A `TorchNetwork` for `model` in `dtype` on `device`; BackendError when unsupported."""
        reason = self.supports(model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        if model.conv is not None:
            return TorchConvNetwork(model, dtype=dtype, device=device)
        if model.feedback_angle is not None:  # independent feedback weights (asymmetric.py)
            return TorchAsymmetricNetwork(model, dtype=dtype, device=device)
        return TorchRtrlNetwork(model, dtype=dtype, device=device)  # TorchNetwork + RTRL
