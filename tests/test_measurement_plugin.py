"""A new measurement is a registration, not an edit of the core: the one-file plugin
`tests/support/epbench_measure_plugin.py` (`residual-curve`), installed through an entry point,
runs from a task file with `epbench run … --backend torch,jax` in worker processes, writes its
records, and `epbench table` shows them through the plugin's own table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
TASK = """\
description = "the free phase's residual along the way (a plugin measurement)"
measure = ["residual-curve"]
dtype = "float64"

[model]
setting = "EB"
inputs = 5
sizes = [4, 6]
input_to = [0, 1]
activation = "tanh"
epsilon = 0.2

[dynamics]
T = 40
K = 4
beta = 0.01

[data]
source = "toy"
batch = 2
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The plugin installed as a `.dist-info` with its entry point, for subprocesses."""
    folder = tmp_path_factory.mktemp("measure-plugin")
    info = folder / "epbench_measure_plugin_test-0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: epbench-measure-plugin-test\nVersion: 0\n"
    )
    info.joinpath("entry_points.txt").write_text(
        "[epbench]\nresidual-curve = epbench_measure_plugin\n"
    )
    paths = [str(folder), str(SUPPORT), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "EPBENCH_LOAD_PLUGINS": "torch,jax,residual-curve",
    }


def epbench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "epbench", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_plugin_measurement_runs_writes_records_and_tabulates(tmp_path: Path, env) -> None:
    task = tmp_path / "residuals.toml"
    task.write_text(TASK, encoding="utf-8")
    out = tmp_path / "out"
    run = epbench("run", str(task), "--backend", "torch,jax", "--out", str(out), env=env)
    assert run.returncode == 0, run.stderr
    lines = [
        json.loads(line) for path in out.rglob("*.jsonl") for line in path.read_text().splitlines()
    ]
    assert sorted(r["backend"] for r in lines) == ["jax", "torch"]
    for record in lines:
        assert record["measurement"] == "residual-curve" and record["status"] == "ok"
        curve = record["metrics"]["residual_curve"]
        assert sorted(curve, key=int) == ["5", "10", "20", "40"]  # JSON keys come sorted
        assert curve["40"] < curve["5"]  # the free phase settles
    jax, torch = sorted(lines, key=lambda r: r["backend"])
    assert torch["metrics"]["residual_curve"] == pytest.approx(jax["metrics"]["residual_curve"])
    table = epbench("table", str(out), env=env)
    assert table.returncode == 0, table.stderr
    assert "step t" in table.stdout.splitlines()[1]  # the plugin's own table, not the generic one
    assert table.stdout.count("residuals") == 8  # 4 steps × 2 backends


def test_without_the_plugin_the_task_is_refused_naming_the_measurement(tmp_path, env) -> None:
    task = tmp_path / "residuals.toml"
    task.write_text(TASK, encoding="utf-8")
    bare = {**env, "EPBENCH_LOAD_PLUGINS": "torch"}
    run = epbench("run", str(task), "--out", str(tmp_path / "out"), env=bare)
    assert run.returncode == 2
    assert "residual-curve" in run.stderr and len(run.stderr.strip().splitlines()) == 1
