"""`epbench.records()` and `epbench export` on real records: the same flat columns as the
`records` view of `epbench query`, a Parquet file that reads back with pandas unchanged, CSV, and
the example analysis script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import epbench
from epbench.cli import main
from epbench.core.record import load_records
from epbench.views.query.tables import database, run_query

ROOT = Path(__file__).parents[1]
SUPPORT = Path(__file__).parent / "support" / "real_records.py"
SCRIPT = ROOT / "examples" / "analysis" / "ep_vs_bptt.py"


def load_support() -> object:
    """tests/support/real_records.py as the module `epbench_test_real_records` (loaded once)."""
    name = "epbench_test_real_records"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SUPPORT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_support().shared_results(tmp_path_factory)


def test_records_frame_has_the_query_views_columns(results: Path) -> None:
    frame = epbench.records(results)
    found = load_records([results]).records
    names, rows = run_query(database(found), "SELECT * FROM records ORDER BY id")
    assert list(frame.columns) == names and len(frame) == len(rows) == len(found)
    assert frame["cell"].tolist() == [r.cell for r in found]
    assert frame["backend"].tolist() == [r.backend for r in found]
    assert epbench.records([results, results]).shape == frame.shape  # each file once


def test_parquet_export_round_trips(results: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "deep" / "records.parquet"
    assert main(["export", str(results), str(out)]) == 0
    assert f"{out}: " in capsys.readouterr().out
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, epbench.records(results))
    assert not list(out.parent.glob(".*.part"))


def test_csv_export(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "records.txt"
    assert main(["export", str(results), str(out), "--format", "csv"]) == 0
    back = pd.read_csv(out)
    frame = epbench.records(results)
    assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
    assert back["seed"].tolist() == frame["seed"].tolist()


def test_export_refuses_an_unknown_suffix(results: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(results), str(tmp_path / "records.xlsx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'.xlsx'" in err
    assert not (tmp_path / "records.xlsx").exists()


def test_the_example_analysis_script_runs(results: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(results)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "records" in done.stdout and "toy" in done.stdout
