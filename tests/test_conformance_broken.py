"""The conformance suite fails deliberately broken backends (tests/support/broken_backends.py),
each with a message that names the case and the quantity, and passes a correct control.

Each broken backend is wrong in one way only: two dynamics defects in a compact numpy
implementation (the nudge inside σ in the P setting; the raw input instead of ρ(x) in the EB
setting) and three output-convention defects wrapped around the torch backend (BPTT traces in
reversed time order; the BPTT state trace averaged instead of summed over the batch; the wrong
sign of β in the symmetric estimator).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from epbench.plugins.conformance import ConformanceError, assert_conforms, check_backend

SUPPORT = Path(__file__).resolve().parent / "support" / "broken_backends.py"


def _support():
    if "broken_backends" not in sys.modules:
        spec = importlib.util.spec_from_file_location("broken_backends", SUPPORT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["broken_backends"] = module
    return sys.modules["broken_backends"]


# defect → (cases to run, a message fragment every report must contain)
EXPECTED = {
    "nudge-inside-sigma": (["P-1h-sigm", "P-2h-tanh"], "P-1h-sigm: EP traces "),
    "raw-input": (["EB-1h-tanh", "toy"], "EB-1h-tanh: free states s"),
    "bptt-reversed": (["P-1h-sigm", "EB-2h-tanh"], "P-1h-sigm: BPTT traces "),
    "bptt-state-mean": (["P-1h-sigm", "EB-2h-tanh"], "P-1h-sigm: BPTT traces s0: max rel diff"),
    "symmetric-sign": (["P-1h-sigm", "EB-2h-tanh"], "P-1h-sigm: EP traces symmetric "),
}


def _broken(defect: str):
    support = _support()
    if defect in support.NUMPY_FAULTS:
        return support.NumpyBackend(defect)
    pytest.importorskip("epbench_torch")
    return support.BrokenTorchBackend(defect)


@pytest.mark.parametrize("defect", sorted(EXPECTED))
def test_broken_backend_fails_naming_the_case(defect: str) -> None:
    cases, fragment = EXPECTED[defect]
    report = check_backend(_broken(defect), dtype="float64", cases=cases)
    assert report.ran == cases and not report.ok
    messages = [str(failure) for failure in report.failures]
    assert any(message.startswith(fragment) for message in messages), messages
    assert all(message.endswith("(float64, cpu)") for message in messages)
    with pytest.raises(ConformanceError, match=fragment.split(":")[0]):
        report.raise_for_failures()


def test_the_numpy_control_passes_the_cases_it_supports() -> None:
    reports = assert_conforms(_support().NumpyBackend(), dtypes=("float64", "float32"))
    for report in reports:
        assert len(report.ran) == 13 and set(report.skipped) == {
            "EB-2h-sigm-clamp",
            "P-2h-asymmetric",
            "P-conv-hardsigm",
        }
        assert "ModelSpec.conv" in report.skipped["P-conv-hardsigm"]


def test_a_backend_exception_is_a_failure_naming_case_dtype_and_device() -> None:
    support = _support()

    class Raising(support.NumpyNetwork):
        def bptt_trace(self, *args, **kwargs):
            raise RuntimeError("no backward pass here")

    class RaisingBackend(support.NumpyBackend):
        def build(self, model, *, dtype, device):
            return Raising(model, dtype=dtype, device=device, fault=None)

    report = check_backend(RaisingBackend(), dtype="float32", cases=["P-1h-tanh"])
    assert [str(f) for f in report.failures] == [
        "P-1h-tanh: BPTT traces: raised RuntimeError: no backward pass here (float32, cpu)"
    ]
    assert report.ran == ["P-1h-tanh"]


def test_unknown_case_names_and_all_declined_are_errors() -> None:
    backend = _support().NumpyBackend()
    with pytest.raises(ValueError, match="unknown conformance case"):
        check_backend(backend, cases=["no-such-case"])
    report = check_backend(backend, cases=["P-conv-hardsigm"])
    assert report.skipped and not report.ran
    with pytest.raises(ConformanceError, match="declined"):
        report.raise_for_failures()
