"""The matrix progress: plain lines when stderr is not a terminal, tqdm on a terminal (the same
library as the training bars), and `run_matrix` choosing between them by stderr."""

from __future__ import annotations

import pytest

from epbench.run.executors.progress import MatrixProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _three_cells(meter: MatrixProgress, clock: Clock) -> None:
    for label, status in (("toy on torch seed 0", "ok"), ("toy on jax seed 0", "failed")):
        meter.started(label)
        clock.now += 10
        meter.ended(label, status)
    meter.started("toy on jax seed 1")
    meter.ended("toy on jax seed 1", "failed", retry="attempt 2")
    meter.started("toy on jax seed 1")
    clock.now += 10
    meter.ended("toy on jax seed 1", "ok")
    meter.close()


def test_plain_lines_without_a_terminal(capsys: pytest.CaptureFixture) -> None:
    lines: list[str] = []
    clock = Clock()
    _three_cells(MatrixProgress(3, parallel=True, emit=lines.append, clock=clock), clock)
    assert lines == [
        "[1/3 done · 0 running · 0 failed · 0:10 elapsed · ~0:20 left] toy on torch seed 0: ok",
        "[2/3 done · 0 running · 1 failed · 0:20 elapsed · ~0:10 left] toy on jax seed 0: failed",
        "toy on jax seed 1: failed, trying again (attempt 2)",
        "[3/3 done · 0 running · 1 failed · 0:30 elapsed] toy on jax seed 1: ok",
    ]
    assert capsys.readouterr().err == ""  # nothing but the lines


def test_one_cell_at_a_time_announces_each_cell() -> None:
    lines: list[str] = []
    clock = Clock()
    _three_cells(MatrixProgress(3, parallel=False, emit=lines.append, clock=clock), clock)
    assert lines[0] == "[1/3] toy on torch seed 0 · 0:00 elapsed"
    assert lines[1] == "[2/3] toy on jax seed 0 · 0:10 elapsed · ~0:20 left"


def test_on_a_terminal_the_display_goes_through_tqdm(capsys: pytest.CaptureFixture) -> None:
    lines: list[str] = []
    clock = Clock()
    meter = MatrixProgress(3, parallel=True, emit=lines.append, bar=True, clock=clock)
    assert meter.bar is not None and meter.bar.total == 3
    _three_cells(meter, clock)
    err = capsys.readouterr().err
    assert lines == []  # everything went through tqdm on stderr
    assert "toy on jax seed 0: failed" in err and "trying again (attempt 2)" in err
    assert "matrix" in err and "3/3" in err and meter.bar.n == 3


def test_a_run_without_a_terminal_prints_plain_lines(
    tmp_path, capsys: pytest.CaptureFixture
) -> None:
    from epbench.cli import main

    argv = ["run", "toy", "--preset", "quick", "--backend", "torch", "--seeds", "0,1"]
    assert main([*argv, "--executor", "inline", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" · ")[0] for line in err if line.startswith("[")] == [
        "[1/2] toy on torch seed 0",
        "[2/2] toy on torch seed 1",
    ]
    assert not any("matrix" in line or "\r" in line for line in err)
