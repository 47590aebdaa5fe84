"""The `speed` and `memory` measurements: the FLOP model, the records, the tables, the CLI.

Cells are small (the `speed` task's quick preset, shortened further with overrides) so that the
file stays within seconds; `epbench run speed` at the paper's settings is the benchmark itself
(README, "Speed and memory"), and `pytest benchmarks` its pytest-benchmark twin.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

from epbench.cli import main
from epbench.config.builtin_tasks import task_folder
from epbench.config.tasks import resolve
from epbench.core.flops import op_flops, phase_ops, step_ops, total_flops, training_ops
from epbench.core.record import read_records
from epbench.core.spec import ConvSpec, ModelSpec
from epbench.measurements.inputs import load_batch
from epbench.measurements.memory import sweep
from epbench.measurements.peak import fastest, flop_bound_seconds, measure_ops
from epbench.measurements.speed import Timed, paired_phases, time_rounds
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.run.store import RecordWriter, environment
from epbench.views.speed_tables import memory_table, speed_table

SPEED = task_folder() / "speed.toml"
ALGORITHMS = ("ep", "ep_symmetric", "bptt")


@pytest.fixture
def torch_backend():
    backends = Registry().get_backends()
    if "torch" not in backends:
        pytest.skip("the torch backend is not installed")
    return backends["torch"]


@pytest.fixture(scope="module")
def example_backend():
    """The example third-party backend (pure numpy, no optional methods), from the checkout."""
    folder = Path(__file__).resolve().parent.parent / "examples" / "epbench-numpy"
    sys.path.insert(0, str(folder))
    try:
        from epbench_numpy_example import NumpyBackend
    finally:
        sys.path.remove(str(folder))
    return NumpyBackend()


def cell(model: str, *overrides: str, preset: str = "quick"):
    (spec,) = resolve(SPEED, selection={"model": model}, preset=preset, overrides=overrides)
    return spec


# --- the FLOP model ------------------------------------------------------------------------------


def test_flops_of_a_small_fully_connected_model_by_hand() -> None:
    """P model 5 → 4 → 3, batch 2, T = 3, K = 2. Per step: W0_1 both ways, 2·(2·2·4·3) = 96;
    projection 2·2·5·4 = 80; ∂Φ/∂W0_1 = 2·3·2·4 = 48, ∂Φ/∂W1_x = 2·4·2·5 = 80."""
    model = ModelSpec(setting="P", inputs=5, sizes=(3, 4), activation="sigm")
    assert total_flops(step_ops(model, 2)) == 96

    def flops(algorithm: str) -> dict[str, int]:
        ops = phase_ops(model, batch=2, T=3, K=2, algorithm=algorithm)
        return {phase: total_flops(c) for phase, c in ops.items()}

    # EP: free 3·96 + 80; nudged 2·96 + 80 (the projection once per phase); the update two
    # ∂Φ/∂W0_1 and one ∂Φ/∂W1_x (linear in the state: one product of the difference).
    assert flops("ep") == {"free": 368, "nudged": 272, "update": 176}
    assert flops("ep_symmetric") == {"free": 368, "nudged": 4 * 96 + 2 * 80, "update": 176}
    # BPTT: 1 free step + projection, 2 recorded steps + projection, the backward pass twice the
    # recorded products, plus the projection's weight adjoint (5·2·4·2 = 80).
    assert flops("bptt") == {"free": 176, "recorded": 272, "backward": 2 * 2 * 96 + 80, "update": 0}
    assert total_flops(training_ops(model, batch=2, T=3, K=2, algorithm="bptt")) == 912


def test_flops_of_p_conv_follow_the_paper_geometry() -> None:
    """P-conv (docs/theory.md §3): per step the fc layer both ways and the 32 → 64 convolution on
    12×12 (8×8 output) up and transposed down; the input convolution (24×24 output) per phase."""
    conv = ConvSpec(input=(1, 28, 28), channels=(32, 64), kernel=5, padding=0, pool=2)
    model = ModelSpec(
        setting="P", inputs=784, sizes=conv.sizes(10), activation="hardsigm", conv=conv
    )
    up = ("conv", 1, 32, 12, 12, 64, 5, 0)
    assert op_flops(up) == 2 * 64 * 8 * 8 * 32 * 25
    assert step_ops(model, 1) == Counter(
        {("gemm", 1, 1024, 10): 1, ("gemm", 1, 10, 1024): 1, up: 1, ("conv_t", *up[1:]): 1}
    )
    proj = phase_ops(model, batch=1, T=1, K=1, algorithm="ep")["free"] - step_ops(model, 1)
    assert proj == Counter({("conv", 1, 1, 28, 28, 32, 5, 0): 1})
    assert op_flops(("conv", 1, 1, 28, 28, 32, 5, 0)) == 2 * 32 * 24 * 24 * 25
    backward = phase_ops(model, batch=1, T=2, K=1, algorithm="bptt")["backward"]
    assert backward[("conv_w", *up[1:])] == 2  # the kernel is used up and down in a step


def test_flop_bound_sums_measured_op_times() -> None:
    ops = Counter({("gemm", 2, 3, 4): 3, ("gemm", 4, 3, 2): 1})
    measured = {("gemm", 2, 3, 4): {"seconds": 0.5}, ("gemm", 4, 3, 2): {"seconds": 2.0}}
    assert flop_bound_seconds(ops, measured) == 3.5
    assert flop_bound_seconds(ops, {("gemm", 2, 3, 4): {"seconds": 0.5}}) is None


def test_fastest_keeps_the_faster_timing_of_each_op() -> None:
    """Ops timed before and after a cell's steps: per op the entry with fewer seconds, an untimed
    entry only where nothing timed the op."""
    a, b, c = ("gemm", 1, 2, 3), ("gemm", 3, 2, 1), ("conv", 1, 1, 4, 4, 2, 3, 0)
    before = {a: {"seconds": 2.0, "source": "torch"}, b: {"seconds": 1.0, "source": "numpy"}}
    after = {a: {"seconds": 1.5, "source": "numpy"}, b: {"seconds": 3.0, "source": "torch"}}
    best = fastest(before, after, {c: {"seconds": None}})
    assert best[a] == {"seconds": 1.5, "source": "numpy"}
    assert best[b] == {"seconds": 1.0, "source": "numpy"}
    assert best[c] == {"seconds": None}
    assert fastest({c: {"seconds": None}}, {c: {"seconds": 0.5}})[c] == {"seconds": 0.5}


def test_throughput_falls_back_to_numpy_without_the_optional_method(example_backend) -> None:
    """The example backend has no `op_seconds`: numpy's GEMM times (the im2col GEMM for a
    convolution) on the CPU, nothing on a GPU."""
    ops = [("gemm", 20, 64, 32), ("conv", 2, 1, 8, 8, 4, 3, 0)]
    out = measure_ops(example_backend, ops, dtype="float32", device="cpu")
    for op, m in out.items():
        assert m["source"] == "numpy" and m["backend_seconds"] is None
        assert 0 < m["seconds"] < 1 and m["flops"] == op_flops(op)
    (gpu,) = measure_ops(example_backend, ops[:1], dtype="float32", device="cuda").values()
    assert gpu["seconds"] is None and gpu["flops_per_s"] is None


# --- the measurements ----------------------------------------------------------------------------


def test_rounds_time_every_case_in_turn() -> None:
    """`time_rounds` runs the cases round-robin (one call batch each per round), so a drift of the
    machine's speed reaches all of them alike; per call: the first, then one value per round."""
    log: list[str] = []

    def case(name: str, seconds: float) -> Timed:
        def run(n: int) -> float:
            log.append(name)
            return n * seconds

        return Timed(run=run, first=seconds, info={})

    timed = {"free": case("free", 0.1), "ep": case("ep", 0.2), "bptt": case("bptt", 0.3)}
    per_call, calls = time_rounds(timed, repeats=3)
    assert log == ["free", "ep", "bptt"] * 2
    assert per_call == {"free": [0.1] * 3, "ep": [0.2] * 3, "bptt": [0.3] * 3}
    assert calls == {"free": 1 + 2 * 2, "ep": 1 + 2 * 1, "bptt": 1 + 2 * 1}  # n ≈ 0.25 s / call
    log.clear()
    time_rounds({"slow": case("slow", 10.0)}, repeats=9)  # past the budget: one round
    assert log == ["slow"]


def test_phases_are_differences_within_a_round() -> None:
    """The machine is 2× slower in round 2 than in round 1: the step minus the free phase of each
    round is 1, 1 and 0.5 s, median 1; the difference of the medians (4 − 3.5) would say 0.5."""
    steps, frees = [3.0, 6.0, 4.0], [2.0, 5.0, 3.5]  # per round: a step and a free phase
    assert paired_phases("ep", steps, frees, T=10, K=2) == {"free": 3.5, "nudged": 1.0}
    bptt = paired_phases("bptt", steps, frees, T=10, K=2)
    assert bptt == pytest.approx({"free": 2.8, "recorded_backward": 1.4, "backward": 1.0})


def test_speed_record_of_the_toy_cell(torch_backend, tmp_path: Path) -> None:
    spec = cell("toy", "dynamics.T=60", "dynamics.K=10")
    options = RunOptions(device="cpu", seed=0)
    batch = load_batch(spec, seed=0, dtype=spec.dtype, data_dir=None)
    writer = RecordWriter(tmp_path)
    record = run_measurement(
        "speed",
        spec,
        torch_backend,
        batch,
        options=options,
        folder=writer.folder,
        env=environment(),
    )
    assert record["status"] == "ok", record.get("reason")
    assert record["measurement"] == "speed" and record["dtype"] == "float64"
    speed = record["metrics"]["speed"]
    assert set(speed) == set(ALGORITHMS)
    for algorithm, m in speed.items():
        assert m["step_seconds"] > 0 and m["compile_seconds"] > 0 and m["peak_memory_bytes"] > 0
        assert m["samples_per_s"] == pytest.approx(spec.data.batch / m["step_seconds"])
        assert m["step_seconds_best"] <= m["step_seconds"] and m["steps_timed"] >= 2
        ops = training_ops(spec.model, batch=1, T=60, K=10, algorithm=algorithm)
        assert m["flops"] == total_flops(ops) > 0
        assert 0 < m["flop_fraction"] < math.inf
        assert m["flop_bound_seconds"] == pytest.approx(m["flop_fraction"] * m["step_seconds"])
        assert all(v >= 0 for v in m["phases"].values())
    assert set(speed["ep"]["phases"]) == {"free", "nudged"}
    assert set(speed["bptt"]["phases"]) == {"free", "recorded_backward", "backward"}
    # EP symmetric runs two nudged phases: more FLOPs than one-sided EP.
    assert speed["ep_symmetric"]["flops"] > speed["ep"]["flops"]
    sources = {op["source"] for op in record["metrics"]["throughput"]["ops"]}
    assert sources <= {"torch", "numpy"} and sources
    writer.write(record)
    (back,) = read_records([writer.path])
    table = speed_table([back])
    for fragment in ("samples/s", "free ms", "nudged ms", "backward ms", "compile s", "% bound"):
        assert fragment in table
    assert "EP sym." in table and "BPTT" in table


@pytest.mark.slow
def test_memory_sweep_ep_flat_bptt_growing(torch_backend) -> None:
    """One process per case; BPTT keeps K steps of P-1h (batch 20) alive, EP none."""
    spec = cell("P-1h")
    memory = sweep(spec, "torch", dtype="float32", device="cpu", seed=0, ks=(10, 160))
    assert memory["K"] == [10, 160] and memory["T"] == [12, 160]  # T = max(T, K)
    ep, bptt = memory["ep"], memory["bptt"]
    assert ep["method"] == bptt["method"] == "process"
    assert ep["variation"] < 0.10
    grown = bptt["step_memory_bytes"][1] - bptt["step_memory_bytes"][0]
    assert grown > 2 * 2**20  # 150 more recorded steps of 20 × (512 + 10) states, and more
    assert bptt["slope_bytes_per_k"] > 10 * abs(ep["slope_bytes_per_k"])
    record = {
        "cell": spec.cell,
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
        "status": "ok",
        "metrics": {"memory": memory},
    }
    table = memory_table([record])
    assert "K=160 MiB (step)" in table and "slope KiB/K" in table


def test_example_backend_without_optional_methods_is_measured(example_backend) -> None:
    """No `op_seconds`, no `memory_stats`: numpy limits, the process's memory."""
    spec = cell("P-1h", "dynamics.T=6", "dynamics.K=2", "model.sizes=[10, 32]")
    batch = load_batch(spec, seed=0, dtype="float32", data_dir=None)
    record = run_measurement(
        "speed", spec, example_backend, batch, options=RunOptions(), folder=Path("unused"), env={}
    )
    assert record["status"] == "ok", record.get("reason")
    assert {op["source"] for op in record["metrics"]["throughput"]["ops"]} == {"numpy"}
    assert all(m["memory_source"] == "process" for m in record["metrics"]["speed"].values())


def test_p_conv_is_timed_against_the_reference_re_creation(torch_backend) -> None:
    """P-conv on torch: EP and BPTT steps interleaved with the re-created paper implementation
    (epbench.measurements.reference); each speed-up is the median of the per-round ratios."""
    spec = cell("P-conv", "dynamics.T=4", "dynamics.K=2")
    batch = load_batch(spec, seed=0, dtype="float32", data_dir=None)
    record = run_measurement(
        "speed", spec, torch_backend, batch, options=RunOptions(), folder=Path("unused"), env={}
    )
    assert record["status"] == "ok", record.get("reason")
    against = record["metrics"]["reference"]
    assert set(against) == {"ep", "bptt"}
    for m in against.values():
        assert m["pairs"] == len(m["speedups"]) >= 5
        assert m["speedup"] == pytest.approx(sorted(m["speedups"])[len(m["speedups"]) // 2])
        assert m["reference_samples_per_s"] > 0 and m["samples_per_s"] > 0
    table = speed_table([record])
    assert "× reference" in table and f"{against['bptt']['speedup']:.2f}×" in table
    assert "≥" not in table and "✓" not in table  # ratios measured in the run, no targets


def test_models_without_a_re_creation_have_no_reference_timing(torch_backend) -> None:
    spec = cell("toy", "dynamics.T=20", "dynamics.K=4")
    batch = load_batch(spec, seed=0, dtype=spec.dtype, data_dir=None)
    record = run_measurement(
        "speed", spec, torch_backend, batch, options=RunOptions(), folder=Path("unused"), env={}
    )
    assert record["status"] == "ok" and "reference" not in record["metrics"]


def test_speed_tables_show_same_run_ratios_and_no_targets() -> None:
    m = {
        "samples_per_s": 30_000.0,
        "step_seconds": 20 / 30_000,
        "compile_seconds": 1.0,
        "peak_memory_bytes": 2**28,
        "flops": 10**8,
        "achieved_flops_per_s": 1.5e11,
        "flop_fraction": 0.5,
        "phases": {"free": 1e-4, "nudged": 2e-4},
    }
    record = {
        "task": "speed",
        "cell": "speed[model=P-1h]",
        "variant": {"model": "P-1h"},
        "backend": "jax",
        "device": "cpu",
        "dtype": "float32",
        "preset": "paper",
        "status": "ok",
        "metrics": {"speed": {"ep": m, "bptt": {**m, "step_seconds": 4 * m["step_seconds"]}}},
    }
    table = speed_table([record])
    assert "target" not in table and "✓" not in table and "✗" not in table
    (ep_row,) = [line for line in table.splitlines() if "| EP " in line]
    cells = [c.strip() for c in ep_row.strip("|").split("|")]
    headers = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert cells[headers.index("time / BPTT")] == "0.25"  # EP's step over BPTT's, same run
    assert cells[headers.index("% bound")] == "50"
    assert speed_table([{**record, "backend": "torch"}]).count("0.25") == 1  # no backend's own


def test_cli_run_speed_prints_the_table_and_compare_passes_on_itself(
    torch_backend, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["speed[model=EB-1h]", "--preset", "quick", "--backend", "torch", "--out", str(tmp_path)]
    assert main(["run", *args, "--set", "dynamics.T=6", "--executor", "inline", "--quiet"]) == 0
    out = capsys.readouterr().out
    for fragment in ("samples/s", "compile s", "peak MiB", "MFLOP/step", "% bound", "EP sym."):
        assert fragment in out
    (path,) = tmp_path.rglob("*.jsonl")
    (record,) = (json.loads(line) for line in path.read_text().splitlines())
    assert record["measurement"] == "speed" and record["status"] == "ok"
    assert main(["compare", str(path), str(path)]) == 0
    assert "no regression" in capsys.readouterr().out
