"""The conformance suite of backend plugins: a backend's numbers against golden float64 traces.

    from epbench.plugins.conformance import assert_conforms, check_backend

    def test_conformance():                       # in a plugin's own tests
        assert_conforms(MyBackend())              # float64 and float32 on the CPU; raises
                                                  # ConformanceError (an AssertionError) listing
                                                  # every failure

    report = check_backend(MyBackend(), dtype="float32", device="cpu", cases=["P-1h-sigm"])
    report.failures        # [Failure], each printed as
                           # "P-1h-sigm: BPTT traces s0: max rel diff 0.93 > 1.2e-05 (float32, cpu)"
    report.skipped         # {case: reason} for the cases the backend does not support
    report.ran             # the cases that ran
    report.raise_for_failures()   # ConformanceError when any failed or none ran

What comes in: a `Backend` (epbench.core.protocols), one dtype, one device, optionally the names
of the golden cases to run (default: all). What goes out: a `Report`; `check_backend` never
raises for a wrong backend — an exception inside a case is a failure naming the case, the step,
the dtype and the device.

The golden cases (`epbench.plugins.golden`, written by `scripts/make_golden.py` with the torch
backend in float64) cover the toy model, the EB and P settings with every activation and 1 and 2
hidden layers, an EB model with clamping, a small P-conv and an asymmetric model (feedback angle),
each on a batch of 3 with inputs outside [0, 1] (so ρ(x) ≠ x). A case the backend does not support
(`epbench.core.support.support_reason`: its `model_fields` and its `supports`) is skipped with the
reason. For every other case the suite compares, with the backend's own network:

- the free-phase states s_T, the residual, the loss and error count of the training steps;
- the EP traces (positive and symmetric estimators, docs/theory.md §2), the BPTT traces;
- the parameters after one EP step (positive and symmetric) and one BPTT step;
- the RTRL gradient against Σ_t ∇BPTT_θ(t), when the network is an `RtrlNetwork`;

each array as max|got − want| / max|want| against `epbench.core.tolerance` (float64: ≤ 1e-9;
float32: the plain rounding bound, or for EP traces and EP steps the bound of their cancellation).
And the structural contract: protocol conformance (`isinstance` with `Backend`, `Network` and the
declared optional capabilities), trace keys, shapes and dtypes, parameter round trips, zero steps,
T = (T − K) + K, determinism of the free phase, predictions, and that the symmetric trace is the
mean of the +β and −β traces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epbench.core import tolerance
from epbench.core.protocols import (
    Backend,
    Network,
    ReferenceBackend,
    ReferenceNetwork,
    RtrlNetwork,
)
from epbench.core.support import support_reason
from epbench.plugins import golden
from epbench.plugins.golden import GoldenCase

Arrays = dict[str, np.ndarray]
# Every member of `epbench.core.protocols.Network`, named in a failed isinstance check.
NETWORK_MEMBERS = tuple(
    "model dtype device load dump free_phase states ep_trace bptt_trace ep_step bptt_step "
    "predict synchronize".split()
)


class ConformanceError(AssertionError):
    """A backend failed the conformance suite; the message lists every failure."""


@dataclass(frozen=True, kw_only=True)
class Failure:
    """One violated check: the case, the quantity (e.g. "BPTT traces s0"), what was wrong."""

    case: str
    quantity: str
    detail: str
    dtype: str
    device: str

    def __str__(self) -> str:
        return f"{self.case}: {self.quantity}: {self.detail} ({self.dtype}, {self.device})"


@dataclass(kw_only=True)
class Report:
    """What `check_backend` found for one backend, dtype and device."""

    backend: str
    dtype: str
    device: str
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when at least one case ran and nothing failed."""
        return bool(self.ran) and not self.failures

    def lines(self) -> list[str]:
        """ "ran: case", "skipped: case (reason)" and "failed: <failure>" lines."""
        return (
            [f"ran: {case}" for case in self.ran]
            + [f"skipped: {case} ({reason})" for case, reason in self.skipped.items()]
            + [f"failed: {failure}" for failure in self.failures]
        )

    def __str__(self) -> str:
        head = f"{self.backend} ({self.dtype}, {self.device}): {len(self.ran)} case(s) ran, "
        head += f"{len(self.skipped)} skipped, {len(self.failures)} failure(s)"
        return "\n".join([head, *self.lines()])

    def raise_for_failures(self) -> Report:
        """Raise ConformanceError when a check failed or no case ran; else return self."""
        if not self.ran and not self.failures:
            raise ConformanceError(f"{self}\nevery conformance case was declined")
        if self.failures:
            raise ConformanceError(str(self))
        return self


def max_rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    """max|got − want| / max|want| in float64 (the absolute maximum when `want` is all zero)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    diff = float(np.max(np.abs(got - want), initial=0.0))
    scale = float(np.max(np.abs(want), initial=0.0))
    if not np.isfinite(diff):
        return float("inf")
    return diff / scale if scale > 0 else diff


def compare_arrays(
    quantity: str, got: Arrays, want: Arrays, rtol: Callable[[str], float]
) -> list[tuple[str, str]]:
    """(quantity, detail) for every disagreement of `got` with `want`: missing or extra names,
    shapes, and values beyond `rtol(name)` (max_rel_diff). Empty when they agree."""
    out = []
    if set(got) != set(want):
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        out.append((f"{quantity} keys", f"missing {missing}, unexpected {extra}"))
    for name in want:
        if name not in got:
            continue
        shape, expected = np.shape(got[name]), np.shape(want[name])
        if shape != expected:
            out.append((f"{quantity} {name}", f"shape {shape}, expected {expected}"))
            continue
        diff, limit = max_rel_diff(got[name], want[name]), rtol(name)
        if not diff <= limit:
            out.append((f"{quantity} {name}", f"max rel diff {diff:.2g} > {limit:.1e}"))
    return out


@dataclass(kw_only=True)
class _Case:
    """The checks of one golden case for one backend network, dtype and device."""

    golden: GoldenCase
    net: Network
    dtype: str
    device: str
    failures: list[Failure] = field(default_factory=list)

    def fail(self, quantity: str, detail: str) -> None:
        spec = self.golden.spec
        self.failures.append(
            Failure(
                case=spec.name,
                quantity=quantity,
                detail=detail,
                dtype=self.dtype,
                device=self.device,
            )
        )

    def compare(
        self, quantity: str, got: Arrays, want: Arrays, rtol: Callable[[str], float]
    ) -> None:
        """Record every disagreement of `got` with `want` (`compare_arrays`) and every array
        not of the checked dtype."""
        for label, detail in compare_arrays(quantity, got, want, rtol):
            self.fail(label, detail)
        for name, value in got.items():
            if np.asarray(value).dtype != np.dtype(self.dtype):
                self.fail(
                    f"{quantity} {name}", f"dtype {np.asarray(value).dtype}, expected {self.dtype}"
                )

    # ---- tolerances ------------------------------------------------------------------------

    def plain(self, name: str = "") -> float:
        """The plain tolerance (states, BPTT traces and steps, RTRL), for any name."""
        return tolerance.plain_rtol(self.dtype)

    def ep_trace(self, group: str) -> Callable[[str], float]:
        """The tolerance of each EP trace of `group` ("ep" or "ep_sym"): the cancellation bound
        of `epbench.core.tolerance.ep_trace_rtols` relative to the golden trace's max."""
        spec, groups = self.golden.spec, self.golden.groups
        rtols = tolerance.ep_trace_rtols(
            self.dtype,
            traces=groups[group],
            states=groups["free"],
            beta_eff=tolerance.beta_eff(
                setting=spec.model.setting, beta=spec.beta, epsilon=spec.model.epsilon
            ),
        )
        return lambda name: rtols.get(name, 0.0)

    def ep_step(self, name: str) -> float:
        """The tolerance of an updated parameter: θ's rounding plus lr_θ times the cancellation."""
        spec = self.golden.spec
        return tolerance.ep_step_rtol(
            self.dtype,
            lr=spec.lrs[name],
            beta=spec.beta,
            param_scale=tolerance.max_abs(self.golden.groups["params"][name]),
        )

    # ---- inputs ----------------------------------------------------------------------------

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The golden batch (x, y) in the checked dtype."""
        return self.golden.x.astype(self.dtype), self.golden.y.astype(self.dtype)

    def params(self) -> Arrays:
        """The golden initial parameters in the checked dtype."""
        return {k: v.astype(self.dtype) for k, v in self.golden.groups["params"].items()}

    def fresh(self) -> Any:
        """Native initial parameters (training steps may update them in place)."""
        return self.net.load(self.params())

    # ---- checks ----------------------------------------------------------------------------

    def protocols(self) -> None:
        """The network is an `epbench.core.protocols.Network` (isinstance: its members exist)."""
        if not isinstance(self.net, Network):
            missing = [m for m in NETWORK_MEMBERS if not hasattr(self.net, m)]
            self.fail("protocol", f"the network is not an epbench Network (missing {missing})")

    def round_trip(self) -> None:
        params = self.params()
        dumped = self.net.dump(self.net.load(params))
        self.compare("dump(load(params))", dumped, params, lambda name: 0.0)

    def free_phase(self) -> None:
        spec, net, (x, _) = self.golden.spec, self.net, self.batch()
        p = self.fresh()
        zero, residual = net.free_phase(p, x, steps=0)
        if any(np.any(v) for v in net.states(zero).values()) or residual != 0.0:
            self.fail("free phase of 0 steps", f"not zero states and residual 0 ({residual})")
        star, residual = net.free_phase(p, x, steps=spec.T)
        states = net.states(star)
        self.compare("free states", states, self.golden.groups["free"], self.plain)
        self.check_residual(float(residual), states)
        mid, _ = net.free_phase(p, x, steps=spec.T - spec.K)
        split = net.states(net.free_phase(p, x, steps=spec.K, start=mid)[0])
        self.compare("free states (T−K)+K vs T", split, states, self.plain)
        again = net.states(net.free_phase(p, x, steps=spec.T)[0])
        if any(not np.array_equal(again[k], v) for k, v in states.items()):
            self.fail("free states", "not deterministic (two equal calls differ)")
        predicted = np.asarray(net.predict(p, x, steps=spec.T))
        if predicted.shape != (len(x),) or not np.array_equal(predicted, states["s0"].argmax(1)):
            self.fail(
                "predict",
                f"{predicted.tolist()}, expected argmax s0 {states['s0'].argmax(1).tolist()}",
            )

    def check_residual(self, residual: float, states: Arrays) -> None:
        """‖s_T − s_{T−1}‖ is a difference of nearly equal states: cancellation tolerance."""
        want = self.golden.scalars["residual"]
        norm = float(np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in states.values())))
        limit = tolerance.cancellation_rtol(
            self.dtype,
            divisor=1.0,
            operand_scale=norm,
            result_scale=max(want, 1e-300),
            safety=tolerance.SAFETY,
        )
        diff = abs(residual - want) / max(want, 1e-300)
        if not (np.isfinite(residual) and residual >= 0 and diff <= limit):
            self.fail("free phase residual", f"{residual:.3e}, expected {want:.3e}")

    def ep_traces(self) -> None:
        spec, net, (x, y) = self.golden.spec, self.net, self.batch()
        p = self.fresh()
        star, _ = net.free_phase(p, x, steps=spec.T)
        traces = {}
        for key, beta, symmetric in (
            ("ep", spec.beta, False),
            ("neg", -spec.beta, False),
            ("ep_sym", spec.beta, True),
        ):
            traces[key] = net.ep_trace(
                p, x, y, start=star, beta=beta, steps=spec.K, symmetric=symmetric
            )
        self.compare("EP traces", traces["ep"], self.golden.groups["ep"], self.ep_trace("ep"))
        self.compare(
            "EP traces symmetric",
            traces["ep_sym"],
            self.golden.groups["ep_sym"],
            self.ep_trace("ep_sym"),
        )
        mean = {k: (v + traces["neg"].get(k, np.nan)) / 2 for k, v in traces["ep"].items()}
        self.compare(
            "EP traces symmetric vs (+β and −β)/2", traces["ep_sym"], mean, self.ep_trace("ep_sym")
        )

    def bptt_traces(self) -> None:
        spec, net, (x, y) = self.golden.spec, self.net, self.batch()
        p = self.fresh()
        mid, _ = net.free_phase(p, x, steps=spec.T - spec.K)
        trace = net.bptt_trace(p, x, y, start=mid, steps=spec.K)
        self.compare("BPTT traces", trace, self.golden.groups["bptt"], self.plain)

    def training_steps(self) -> None:
        spec, net, (x, y) = self.golden.spec, self.net, self.batch()
        runs = {
            "EP step": (
                "ep_step",
                lambda p: net.ep_step(
                    p, x, y, free_steps=spec.T, steps=spec.K, beta=spec.beta, lrs=spec.lrs
                ),
            ),
            "EP step symmetric": (
                "ep_step_sym",
                lambda p: net.ep_step(
                    p,
                    x,
                    y,
                    free_steps=spec.T,
                    steps=spec.K,
                    beta=spec.beta,
                    lrs=spec.lrs,
                    symmetric=True,
                ),
            ),
            "BPTT step": (
                "bptt_step",
                lambda p: net.bptt_step(p, x, y, free_steps=spec.T, steps=spec.K, lrs=spec.lrs),
            ),
        }
        for quantity, (key, run) in runs.items():
            new, loss, errors = run(self.fresh())
            rtol = self.plain if key == "bptt_step" else self.ep_step
            self.compare(f"{quantity} parameters", net.dump(new), self.golden.groups[key], rtol)
            want_loss, want_errors = self.golden.scalars["loss"], self.golden.scalars["errors"]
            if not abs(float(loss) - want_loss) <= self.plain() * abs(want_loss):
                self.fail(f"{quantity} loss", f"{float(loss):.9g}, expected {want_loss:.9g}")
            if int(errors) != int(want_errors):
                self.fail(f"{quantity} errors", f"{int(errors)}, expected {int(want_errors)}")

    def rtrl(self) -> None:
        """The optional RTRL gradient (forward-mode BPTT) equals the golden Σ_t ∇BPTT_θ(t)."""
        if not isinstance(self.net, RtrlNetwork):
            return
        spec, net, (x, y) = self.golden.spec, self.net, self.batch()
        p = self.fresh()
        mid, _ = net.free_phase(p, x, steps=spec.T - spec.K)
        got = net.rtrl_gradient(p, x, y, start=mid, steps=spec.K)
        want = {k: self.golden.groups["bptt"][k].sum(0) for k in self.golden.groups["params"]}
        self.compare("RTRL gradient", got, want, self.plain)


CHECKS = (
    ("protocol", _Case.protocols),
    ("parameter round trip", _Case.round_trip),
    ("free phase", _Case.free_phase),
    ("EP traces", _Case.ep_traces),
    ("BPTT traces", _Case.bptt_traces),
    ("training steps", _Case.training_steps),
    ("RTRL gradient", _Case.rtrl),
)


def _run_case(backend: Backend, case: GoldenCase, *, dtype: str, device: str) -> list[Failure]:
    """Build the case's network and run every check; an exception fails that check only (or
    the whole case when `build` raises), with the exception named."""
    try:
        net = backend.build(case.spec.model, dtype=dtype, device=device)
    except Exception as err:  # a backend's failure is a finding, not a crash
        detail = f"raised {type(err).__name__}: {err}"
        return [
            Failure(
                case=case.spec.name, quantity="build", detail=detail, dtype=dtype, device=device
            )
        ]
    checker = _Case(golden=case, net=net, dtype=dtype, device=device)
    for label, check in CHECKS:
        try:
            check(checker)
        except Exception as err:
            checker.fail(label, f"raised {type(err).__name__}: {err}")
    return checker.failures


def _backend_protocols(backend: Backend, report: Report) -> None:
    """`Backend` conformance, and a declared `ReferenceBackend` returns ReferenceNetworks."""

    def fail(detail: str) -> None:
        report.failures.append(
            Failure(
                case="backend",
                quantity="protocol",
                detail=detail,
                dtype=report.dtype,
                device=report.device,
            )
        )

    if not isinstance(backend, Backend):
        fail(
            "the backend is not an epbench Backend (name, model_fields, versions, "
            "device_info, supports, build)"
        )
    if isinstance(backend, ReferenceBackend):
        case = next(iter(golden.load_all().values()))
        try:
            ref = backend.reference_network(
                case.spec.model, dtype=report.dtype, device=report.device
            )
        except Exception as err:
            fail(f"reference_network raised {type(err).__name__}: {err}")
            return
        if ref is not None and not isinstance(ref, ReferenceNetwork):
            fail("reference_network returned something that is not a ReferenceNetwork")


def select_cases(cases: Iterable[str] | None) -> list[GoldenCase]:
    """The golden cases named in `cases` (all when None); ValueError for an unknown name."""
    known = golden.load_all()
    if cases is None:
        return list(known.values())
    names = list(cases)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown conformance case(s) {unknown}; known: {sorted(known)}")
    return [known[name] for name in names]


def check_backend(
    backend: Backend,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    cases: Iterable[str] | None = None,
) -> Report:
    """Run the conformance suite (module doc) for one dtype and device; return the `Report`.

    `cases`: golden case names to run (default: all). A case the backend does not support is
    skipped with the reason of `epbench.core.support.support_reason`."""
    report = Report(
        backend=getattr(backend, "name", type(backend).__name__), dtype=dtype, device=device
    )
    _backend_protocols(backend, report)
    for case in select_cases(cases):
        name = case.spec.name
        try:
            reason = support_reason(backend, case.spec.model, dtype=dtype, device=device)
        except Exception as err:
            reason = None
            report.failures.append(
                Failure(
                    case=name,
                    quantity="supports",
                    dtype=dtype,
                    device=device,
                    detail=f"raised {type(err).__name__}: {err}",
                )
            )
            continue
        if reason:
            report.skipped[name] = reason
            continue
        failures = _run_case(backend, case, dtype=dtype, device=device)
        report.failures.extend(failures)
        report.ran.append(name)
    return report


def assert_conforms(
    backend: Backend,
    *,
    dtypes: Iterable[str] = ("float64", "float32"),
    device: str = "cpu",
    cases: Iterable[str] | None = None,
) -> list[Report]:
    """`check_backend` for every dtype; ConformanceError listing every failure of all of them
    (or when no case ran for some dtype). Returns the reports when the backend conforms."""
    reports = [check_backend(backend, dtype=d, device=device, cases=cases) for d in dtypes]
    bad = [r for r in reports if not r.ok]
    if bad:
        raise ConformanceError("\n\n".join(str(r) for r in bad))
    return reports
