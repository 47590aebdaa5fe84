"""`epbench query` on real records: the flat `records` view, the `gdu` view, the named queries,
the output formats, a malformed query (one line, exit 2) and a corrupt record line (reported,
the others still queried)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from epbench.cli import main
from epbench.core.record import load_records
from epbench.views.query.named import named_queries
from epbench.views.query.tables import database, run_query

EXAMPLE = Path(__file__).parents[1] / "results" / "example-quick"
SUPPORT = Path(__file__).parent / "support" / "real_records.py"


def load_support() -> object:
    """tests/support/real_records.py as the module `epbench_test_real_records` (loaded once)."""
    name = "epbench_test_real_records"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SUPPORT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


real_records = load_support()
mnist_found = real_records.mnist_found


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_records.shared_results(tmp_path_factory)


def query(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["query", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_records_view_has_one_row_per_record_with_flat_columns(results: Path) -> None:
    found = load_records([results]).records
    con = database(found)
    names, rows = run_query(con, "SELECT * FROM records ORDER BY id")
    assert len(rows) == len(found)
    for column in ("cell", "measurement", "backend", "device", "dtype", "seed", "status"):
        assert column in names
    for column in ("commit", "started", "estimator", "cosine", "rmse", "record"):
        assert column in names
    by_name = [dict(zip(names, row, strict=True)) for row in rows]
    for record, row in zip(found, by_name, strict=True):
        assert (row["cell"], row["backend"], row["seed"]) == (
            record.cell,
            record.backend,
            record.seed,
        )
        assert row["commit"] == record.environment.get("commit")
        assert json.loads(row["record"])["metrics"] == json.loads(json.dumps(record.metrics))
    gdu = [(r, row) for r, row in zip(found, by_name, strict=True) if r.measurement == "gdu"]
    assert gdu
    for record, row in gdu:
        cosines = [m["cosine"] for m in record.metrics["gdu"].values()]
        assert row["cosine"] == pytest.approx(min(cosines))
    # the JSON column answers what the flat columns do not
    _, cpus = run_query(con, "SELECT DISTINCT record->>'$.environment.cpu' FROM records")
    assert {cpu for (cpu,) in cpus} == {r.environment.get("cpu") for r in found}


def test_acceptance_query_on_a_fresh_run(results: Path, capsys) -> None:
    sql = "SELECT backend, count(*) AS n FROM records GROUP BY backend ORDER BY backend"
    code, out, _ = query(capsys, str(results), sql, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    found = load_records([results]).records
    expected = {b: sum(r.backend == b for r in found) for b in {r.backend for r in found}}
    assert {row["backend"]: int(row["n"]) for row in rows} == expected


@pytest.mark.skipif(not any(EXAMPLE.rglob("*.jsonl")), reason="the example results hold no records")
def test_acceptance_query_on_the_example_results(capsys) -> None:
    code, out, _ = query(
        capsys, str(EXAMPLE), "SELECT backend, count(*) FROM records GROUP BY backend"
    )
    assert code == 0 and "torch" in out


def test_output_formats(results: Path, capsys) -> None:
    sql = "SELECT cell, backend, seed, started FROM records ORDER BY id"
    outputs = {}
    for fmt in ("table", "csv", "json", "markdown"):
        code, out, _ = query(capsys, str(results), sql, "--format", fmt)
        assert code == 0
        outputs[fmt] = out
    objects = json.loads(outputs["json"])
    assert [o["cell"] for o in objects] == [r.cell for r in load_records([results]).records]
    assert objects[0]["started"].endswith("+00:00")
    assert outputs["markdown"].splitlines()[1].startswith("|--")
    assert outputs["csv"].splitlines()[0] == "cell,backend,seed,started"
    assert "cell" in outputs["table"].splitlines()[0]


def test_list_shows_every_named_query(capsys) -> None:
    code, out, _ = query(capsys, "--list")
    assert code == 0
    for name, named in named_queries().items():
        assert name in out and named.description in out
    assert {"ep-vs-bptt", "speed-per-commit", "gdu-cosine-per-layer"} <= set(named_queries())


def _named(results: Path, name: str) -> list[dict]:
    con = database(load_records([results]).records)
    names, rows = run_query(con, named_queries()[name].sql)
    return [dict(zip(names, row, strict=True)) for row in rows]


def test_named_records_per_backend(results: Path) -> None:
    rows = _named(results, "records-per-backend")
    found = load_records([results]).records
    assert sum(row["records"] for row in rows) == len(found)
    assert {row["backend"] for row in rows} == {r.backend for r in found}


def test_named_gdu_cosine_per_layer(results: Path) -> None:
    rows = _named(results, "gdu-cosine-per-layer")
    toy = [r for r in load_records([results]).records if r.cell == "toy"]
    for record in toy:
        mine = {row["layer"]: row for row in rows if row["backend"] == record.backend}
        assert sorted(mine) == [0, 1]  # the toy model's two layers
        for layer, row in mine.items():
            gdu = record.metrics["gdu"]
            cosines = [m["cosine"] for n, m in gdu.items() if _layer(n) == layer]
            assert row["min_cosine"] == pytest.approx(min(cosines))
            assert row["min_cosine"] > 0.99  # the theorem holds on the toy model


def _layer(name: str) -> int:
    from epbench.core.params import layer_of

    return layer_of(name)


def test_named_speed_per_commit(results: Path) -> None:
    speed = [r for r in load_records([results]).records if r.measurement == "speed"]
    if not speed:
        pytest.skip("no torch backend: no speed record")
    (row,) = _named(results, "speed-per-commit")
    ep, bptt = speed[0].metrics["speed"]["ep"], speed[0].metrics["speed"]["bptt"]
    assert row["commit"] == speed[0].environment["commit"][:10]
    assert row["ep_samples_per_s"] == pytest.approx(ep["samples_per_s"], abs=0.06)
    assert row["ep_over_bptt"] == pytest.approx(ep["step_seconds"] / bptt["step_seconds"], abs=6e-4)


@pytest.mark.skipif(not mnist_found(), reason="MNIST not found (set EPBENCH_DATA): no training")
def test_named_ep_vs_bptt(results: Path) -> None:
    train = [r for r in load_records([results]).records if r.measurement == "train"]
    if not train:
        pytest.skip("no torch backend: no training record")
    (row,) = _named(results, "ep-vs-bptt")
    ep, bptt = (train[0].metrics["train"][a]["test_error"][-1] for a in ("ep", "bptt"))
    assert (row["cell"], row["seeds"]) == ("tiny-train", 1)
    assert row["ep_test"] == pytest.approx(ep, abs=0.006)
    assert row["bptt_test"] == pytest.approx(bptt, abs=0.006)
    assert row["ep_minus_bptt"] == pytest.approx(ep - bptt, abs=0.006)


def test_named_not_ok_lists_a_failed_record(results: Path, tmp_path: Path) -> None:
    file = next(results.rglob("*.jsonl"))
    first = json.loads(file.read_text().splitlines()[0])
    failed = {**first, "status": "failed", "reason": "worker lost: killed", "metrics": {}}
    shutil.copy(file, tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_text(json.dumps(failed) + "\n")
    rows = _named(tmp_path, "not-ok")
    assert [(r["status"], r["reason"], Path(r["file"]).name) for r in rows] == [
        ("failed", "worker lost: killed", "b.jsonl")
    ]


def test_a_query_by_name_on_the_command_line(results: Path, capsys) -> None:
    code, out, _ = query(capsys, str(results), "records-per-backend", "--format", "json")
    assert code == 0 and {row["status"] for row in json.loads(out)} == {"ok"}


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELEC backend FROM records", "syntax error"),
        ("SELECT no_such_column FROM records", "no_such_column"),
        ("SELECT * FROM no_such_view", "no_such_view"),
        ("unknown-name", "named queries"),
    ],
)
def test_a_malformed_query_is_one_line_exit_2(results: Path, capsys, sql: str, needle: str):
    code, out, err = query(capsys, str(results), sql)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("epbench: error: ")
    assert needle in err


def test_a_corrupt_line_is_reported_and_the_rest_queried(
    results: Path, tmp_path: Path, capsys
) -> None:
    lines = next(results.rglob("*.jsonl")).read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n" + "\n".join(lines[1:]) + "\n")
    code, out, err = query(capsys, str(bad), "SELECT count(*) AS n FROM records", "--format", "csv")
    assert code == 0
    assert out.splitlines()[1] == str(len(lines))
    assert f"{bad}:2:" in err and len(err.strip().splitlines()) == 1
