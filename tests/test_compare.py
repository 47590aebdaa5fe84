"""`epbench compare OLD NEW`: the regression gate over speed records (fabricated records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epbench.cli import main
from epbench.core.errors import EpbenchError
from epbench.views.compare import compare_speed, regressions

CASES = {("speed[model=P-1h]", "jax"): 0.004, ("speed[model=P-2h]", "torch"): 0.1}


def record(step: dict[str, float], *, memory: float = 2**28, config: str = "abc") -> list:
    """One ok speed record per (cell, backend) of `step`, every algorithm at the given seconds."""
    out = []
    for (cell, backend), seconds in step.items():
        algorithms = {
            name: {
                "step_seconds": seconds * factor,
                "samples_per_s": 20 / (seconds * factor),
                "peak_memory_bytes": memory,
            }
            for name, factor in (("ep", 1.0), ("ep_symmetric", 1.5), ("bptt", 1.2))
        }
        out.append(
            {
                "schema": 1,
                "measurement": "speed",
                "status": "ok",
                "cell": cell,
                "backend": backend,
                "device": "cpu",
                "dtype": "float32",
                "config_hash": config,
                "metrics": {"speed": algorithms},
            }
        )
    return out


def write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def gate(tmp_path: Path, old: list, new: list, *flags: str) -> int:
    return main(["compare", str(write(tmp_path / "old.jsonl", old)),
                 str(write(tmp_path / "new.jsonl", new)), *flags])  # fmt: skip


def test_a_case_made_20_percent_slower_fails_the_gate(tmp_path: Path, capsys) -> None:
    slower = {**CASES, ("speed[model=P-1h]", "jax"): CASES[("speed[model=P-1h]", "jax")] * 1.2}
    assert gate(tmp_path, record(CASES), record(slower)) == 1
    out = capsys.readouterr()
    assert out.out.count("slower") == 3  # EP, EP symmetric and BPTT of that cell
    assert "3 of 6 cases regressed" in out.err


@pytest.mark.parametrize("factor", [1.0, 1.05, 1.099, 0.5])
def test_no_regression_within_the_threshold_or_faster(tmp_path: Path, capsys, factor) -> None:
    new = {key: seconds * factor for key, seconds in CASES.items()}
    assert gate(tmp_path, record(CASES), record(new)) == 0
    out = capsys.readouterr().out
    assert "no regression" in out
    assert ("faster" in out) == (factor == 0.5)


def test_threshold_option(tmp_path: Path) -> None:
    new = {key: seconds * 1.2 for key, seconds in CASES.items()}
    assert gate(tmp_path, record(CASES), record(new), "--threshold", "0.25") == 0
    assert gate(tmp_path, record(CASES), record(new), "--threshold", "0.15") == 1


def test_missing_case_regresses_and_new_case_does_not(tmp_path: Path, capsys) -> None:
    only = {("speed[model=P-1h]", "jax"): 0.004}
    assert gate(tmp_path, record(CASES), record(only)) == 1
    assert "missing" in capsys.readouterr().out
    assert gate(tmp_path, record(only), record(CASES)) == 0
    assert "new" in capsys.readouterr().out


def test_memory_gate_only_when_asked(tmp_path: Path) -> None:
    old, new = record(CASES, memory=2**28), record(CASES, memory=1.5 * 2**28)
    assert gate(tmp_path, old, new) == 0
    assert gate(tmp_path, old, new, "--memory") == 1


def test_last_record_of_a_case_wins_and_other_records_are_ignored(tmp_path: Path) -> None:
    """OLD holds an earlier, faster run and then the current one; failed and GDU records are
    not speed cases."""
    faster = {key: seconds * 0.5 for key, seconds in CASES.items()}
    noise = [{"schema": 1, "measurement": "gdu", "status": "ok", "cell": "toy"}]
    failed = [{**r, "status": "failed"} for r in record(faster)]
    rows = compare_speed(record(faster) + record(CASES) + noise, record(CASES) + failed)
    assert [r["verdicts"] for r in rows] == [["same"]] * 6
    assert all(r["time_ratio"] == pytest.approx(1.0) for r in rows)


def test_different_configuration_is_noted_not_flagged() -> None:
    rows = compare_speed(record(CASES, config="abc"), record(CASES, config="xyz"))
    assert all("config differs" in r["verdicts"] for r in rows)
    assert regressions(rows) == []


def test_nothing_to_compare_is_an_input_error(tmp_path: Path, capsys) -> None:
    assert gate(tmp_path, [{"schema": 1, "measurement": "gdu", "status": "ok"}], record(CASES)) == 2
    assert "expected ok speed records" in capsys.readouterr().err
    assert gate(tmp_path, record(CASES), record(CASES), "--threshold", "-1") == 2


@pytest.mark.parametrize("threshold", ["nan", "inf", "-inf", "0", "0.0", "-0.1", "-1", "x"])
def test_a_threshold_that_would_switch_the_gate_off_is_refused(
    tmp_path: Path, capsys, threshold: str
) -> None:
    slower = {key: seconds * 10 for key, seconds in CASES.items()}
    assert gate(tmp_path, record(CASES), record(slower), "--threshold", threshold) == 2
    out = capsys.readouterr()
    (line,) = out.err.strip().splitlines()
    assert line.startswith("epbench: error: ") and "--threshold" in line and threshold in line
    assert "expected a finite number > 0" in line and out.out == ""
    with pytest.raises(EpbenchError, match="finite number > 0"):
        compare_speed(record(CASES), record(CASES), threshold=float(threshold.strip("x") or 0))


@pytest.mark.parametrize(
    ("old_seconds", "verdict"),
    [(0.0, "OLD time zero"), (None, "OLD time missing"), (-1.0, "OLD time invalid")],
)
def test_a_zero_or_missing_baseline_is_reported_as_such_and_fails_the_gate(
    tmp_path: Path, capsys, old_seconds: float | None, verdict: str
) -> None:
    old = record(CASES)
    for r in old:
        for m in r["metrics"]["speed"].values():
            if old_seconds is None:
                del m["step_seconds"]
            else:
                m["step_seconds"] = old_seconds
    assert gate(tmp_path, old, record(CASES)) == 1
    out = capsys.readouterr()
    assert out.out.count(verdict) == 6 and " same" not in out.out
    assert "6 of 6 cases regressed" in out.err
    rows = compare_speed(record(CASES), old)  # the NEW side without a time
    assert all(r["verdicts"] == [verdict.replace("OLD", "NEW")] for r in rows)
    assert all(r["time_ratio"] is None for r in rows) and len(regressions(rows)) == 6


def test_a_zero_memory_is_reported_only_when_gated_on_memory() -> None:
    old = record(CASES, memory=0)
    assert [r["verdicts"] for r in compare_speed(old, record(CASES))] == [["same"]] * 6
    rows = compare_speed(old, record(CASES), memory=True)
    assert all(r["verdicts"] == ["OLD memory zero"] for r in rows) and len(regressions(rows)) == 6
