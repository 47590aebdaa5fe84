"""The torch `Backend` (epbench.core.protocols.Backend): versions, device, support, build.

What comes in: a `ModelSpec`, a dtype name and a device name, after the core's own checks
(`epbench.core.support.support_reason`: the names, and the `model_fields` allow-list). What goes
out: a reason this backend cannot run the combination (`supports`), or a
`epbench_torch.adapter.TorchNetwork` over the model's family (`build`).
"""

from __future__ import annotations

import platform

import torch

from epbench.core.errors import BackendError
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason

from . import asymmetric, conv, flow, network, rnn, throughput
from .adapter import WHERE, Family, TorchNetwork
from .reference_conv import ReferenceConvNetwork, reference_unsupported
from .seeds import TorchSeedNetwork, batches_seeds

# Every ModelSpec field this backend understands (epbench.core.support: an allow-list).
MODEL_FIELDS = frozenset(
    "setting inputs sizes input_to activation epsilon clamp conv feedback_angle"
    " cell weight_scale".split()  # the standard RNN baselines; scaled initial weights
)


def family_of(model: ModelSpec) -> Family:
    """The family that runs `model`: conv layers (`conv`), independent feedback weights
    (`asymmetric`) or the tied fully connected model (`network`); `rnn` for the standard RNN
    baselines (`model.cell`)."""
    if model.cell != "phi":
        return rnn.FAMILY
    if model.conv is not None:
        return conv.FAMILY
    if model.feedback_angle is not None:
        return asymmetric.FAMILY
    return network.FAMILY


class TorchBackend:
    """Builds `TorchNetwork`s over the tied fully connected, asymmetric and P-conv families
    (docs/theory.md §3), on the CPU or a CUDA device."""

    name = "torch"
    model_fields = MODEL_FIELDS
    # Optional capabilities (epbench.core.protocols: OpTimingBackend, MemoryStatsBackend,
    # ProfilerBackend; `reference_network` below is ReferenceBackend).
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
        """None when `build` can run (model, dtype, device); otherwise why not (a skip reason):
        no CUDA, or a model its family does not run (e.g. conv outside the P setting)."""
        if device == "cuda" and not torch.cuda.is_available():
            return f"{WHERE}: CUDA is not available to this torch build or machine"
        reason = family_of(model).unsupported(model)
        return None if reason is None else f"{WHERE}: {reason}"

    def reference_network(
        self, model: ModelSpec, *, dtype: str, device: str
    ) -> ReferenceConvNetwork | None:
        """The paper's implementation re-created for `model` (epbench.measurements.reference): the
        paper's P-conv geometry only (reference_conv.py); None for any other model."""
        if support_reason(self, model, dtype=dtype, device=device) or reference_unsupported(model):
            return None
        return ReferenceConvNetwork(model, dtype=dtype, device=device)

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> TorchNetwork:
        """A `TorchNetwork` for `model` in `dtype` on `device`; BackendError with the reason
        (`epbench.core.support.support_reason`) when it cannot run."""
        reason = support_reason(self, model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        net = TorchNetwork(model, family=family_of(model), dtype=dtype, device=device)
        jvp = flow.state_jvp_of(net)  # the FlowNetwork capability, where the family has it
        if jvp is not None:
            net.state_jvp = jvp
        return net

    def build_seeds(self, model: ModelSpec, *, dtype: str, device: str, seeds: int):
        """A `seeds.TorchSeedNetwork` of `seeds` seeds of `model` (the optional capability
        `epbench.core.protocols.SeedBatchingBackend`), or None where seeds are not batched
        (`seeds.batches_seeds`: tied fully connected models only)."""
        reason = support_reason(self, model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        if seeds < 2 or not batches_seeds(model):
            return None
        family = family_of(model)
        return TorchSeedNetwork(model, family=family, dtype=dtype, device=device, seeds=seeds)
