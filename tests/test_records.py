"""Typed records (epbench.core.record): the round trip, the upgrade of older schemas, the one
loader (good records and problems, each real file once), one-line type errors, and the writer
(epbench.run.store) that checks what it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from epbench.core.errors import ResultsError
from epbench.core.record import (
    SCHEMA_VERSION,
    Record,
    as_record,
    load_records,
    metrics_of,
    read_records,
    record_key,
    upgrade,
)
from epbench.run.store import RecordWriter, ok_records
from epbench.views.tables import format_record, generic_table, overview

RESULTS = Path(__file__).resolve().parents[1] / "results"

# A real schema-1 line, written by `epbench run toy --preset quick --backend torch` (commit
# 711590729f), its GDU metrics cut to two names and two steps to keep it short.
SCHEMA_1 = (
    '{"angle": null, "attempts": 1, "backend": "torch", "beta_used": 0.01, "cell": "toy", '
    '"config": {"data": {"batch": 1, "source": "toy"}, "description": "Toy model of Fig. 2", '
    '"dtype": "float64", "dynamics": {"K": 40, "T": 1000, "beta": 0.01, "estimator": '
    '"positive"}, "measure": ["gdu"], "model": {"activation": "tanh", "clamp": false, '
    '"epsilon": 0.08, "input_to": [0, 1], "inputs": 5, "setting": "EB", "sizes": [10, 50]}}, '
    '"config_hash": "5e2646c8c8061bd4", "depth": 1, "device": "cpu", "dtype": "float64", '
    '"environment": {"argv": ["run", "toy", "mnist-fc", "--preset", "quick", "--backend", '
    '"torch,jax", "--out", "/tmp/before-results", "--quiet"], "backend_versions": {"cuda": '
    '"none", "torch": "2.13.0+cpu"}, "commit": "711590729f67ce5f02a61a8224e4921b5f0fc72e", '
    '"cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "device_info": "x86_64, 2 torch '
    'threads, AVX512", "dirty": false, "epbench": "0.1.0", "executor": "local", "host": "vm", '
    '"machine": "vm", "numpy": "2.4.6", "pid": 3185, "platform": '
    '"Linux-6.18.44-fc-v1147-x86_64-with-glibc2.36", "python": "3.11.7"}, "estimator": '
    '"positive", "measurement": "gdu", "metrics": {"arrival": {"bptt": {"s0": 0, "s1": 1}, '
    '"ep": {"s0": 0, "s1": 1}}, "gdu": {"W0_1": {"cosine": 0.9999968148576515, '
    '"cosine_per_step": [0.999999999720553, 0.9999999970581261], "rel_error": '
    '0.0052471362622505836, "rmse": 0.007867081272392829, "rmse_std": 0.014729012782918207, '
    '"sign": 1.0}, "s0": {"cosine": 0.999999934088524, "cosine_per_step": [1.0, '
    '0.999999999919213], "rel_error": 0.005815971809006388, "rmse": 0.007064757768109875, '
    '"rmse_std": 0.00232457286235192, "sign": 1.0}}, "residual": 1.482027831227889e-16, '
    '"saturated_outputs": null, "signal_steps": 1}, "peak_memory_bytes": 330227712, "preset": '
    '"quick", "reason": null, "schema": 1, "seed": 0, "started": "2026-12-03T11:48:58Z", '
    '"status": "ok", "symmetric": false, "task": "toy", "timings": {"first_seconds": '
    '0.08747675000000754, "phases": {"bptt": 0.006363539999995282, "ep": 0.0023087229999987358,'
    ' "free_before": 0.014177320999976928, "free_last": 0.0007167829999730202, "total": '
    '0.023566366999943966}, "repeats": 1, "steady_seconds": 0.023566366999943966}, "variant": '
    "{}}"
)


def v1() -> dict:
    return json.loads(SCHEMA_1)


def write(path: Path, lines: list[str], *, end: str = "\n") -> Path:
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return path


def test_a_schema_1_record_upgrades_to_the_current_schema() -> None:
    raw = v1()
    assert raw["schema"] == 1 and SCHEMA_VERSION == 2
    up = upgrade(raw)
    assert up["schema"] == SCHEMA_VERSION and up["measurement"] == "gdu" and up["device"] == "cpu"
    assert {k: v for k, v in up.items() if k != "schema"} == {
        k: v for k, v in raw.items() if k != "schema"
    }
    old = {k: v for k, v in raw.items() if k not in ("measurement", "device")}  # the oldest
    assert upgrade(old) == up
    record = Record.from_dict(up, where="x:1")
    assert (record.cell, record.backend, record.dtype, record.seed) == (
        "toy",
        "torch",
        "float64",
        0,
    )
    assert record.status == "ok" and record.angle is None and record.attempts == 1
    assert metrics_of(record, "gdu")["W0_1"]["cosine"] > 0.99
    assert metrics_of(record, "nothing") == {} and record.extra == {}
    assert upgrade(up) == up  # the current version is left as it is


def test_round_trip_gives_back_the_same_json() -> None:
    raw = upgrade(v1())
    record = Record.from_dict(raw)
    assert record.to_dict() == raw
    text = json.dumps(raw, sort_keys=True)
    assert json.dumps(Record.from_dict(json.loads(text)).to_dict(), sort_keys=True) == text
    # keys the source did not have stay absent; unknown keys come back from `extra`
    small = {"schema": 2, "status": "skipped", "cell": "toy", "reason": None, "new_key": [1]}
    typed = Record.from_dict(small)
    assert typed.extra == {"new_key": [1]} and typed.to_dict() == small
    assert typed.metrics == {} and typed.measurement == "gdu"


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"seed": "0"}, "seed", "an integer or null"),
        ({"seed": True}, "seed", "an integer or null"),
        ({"status": "done"}, "status", "one of ok, skipped, failed, diverged"),
        ({"metrics": [1, 2]}, "metrics", "an object"),
        ({"beta_used": "0.01"}, "beta_used", "a number or null"),
        ({"symmetric": 1}, "symmetric", "true, false or null"),
        ({"cell": 3}, "cell", "a string or null"),
    ],
)
def test_bad_types_give_one_line_errors(change: dict, field: str, expected: str) -> None:
    raw = {**upgrade(v1()), **change}
    with pytest.raises(ResultsError) as caught:
        Record.from_dict(raw, where="r.jsonl:7")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"r.jsonl:7: {field}: expected {expected}, found ")


def test_records_without_schema_or_status_and_newer_schemas_are_refused() -> None:
    with pytest.raises(ResultsError, match=r"^f:1: schema: expected an epbench record version"):
        upgrade({"status": "ok"}, where="f:1")
    with pytest.raises(ResultsError, match=r"^f:1: status: expected an epbench record with"):
        Record.from_dict({"schema": 2}, where="f:1")
    with pytest.raises(ResultsError, match=r"expected ≤ 2, found 3 .*upgrade epbench"):
        upgrade({"schema": 3, "status": "ok"}, where="f:1")


def test_a_bad_line_is_a_problem_and_the_others_load(tmp_path: Path, capsys) -> None:
    good = json.dumps(v1())
    newer = json.dumps({**v1(), "schema": 99})
    typed = json.dumps({**v1(), "seed": "zero"})
    path = write(
        tmp_path / "r.jsonl",
        [good, "{not json", good, typed, "", newer, '{"schema": 1, "ce'],
        end="",
    )
    loaded = load_records([path])
    assert [r.line for r in loaded.records] == [1, 3]
    assert all(r.file == str(path) for r in loaded.records)
    assert [(p.file, p.line) for p in loaded.problems] == [(str(path), n) for n in (2, 4, 6, 7)]
    messages = [p.message for p in loaded.problems]
    assert messages[0].startswith("expected one JSON record per line, found ")
    assert messages[1].startswith("seed: expected an integer or null, found 'zero'")
    assert "found 99" in messages[2]
    assert "torn last line" in messages[3]
    records = read_records([path])
    assert len(records) == 2 and records[0].where == f"{path}:1"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [str(p) for p in loaded.problems]
    assert err[0].startswith(f"{path}:2: expected one JSON record per line")


def test_nothing_usable_is_an_error_naming_the_first_problem(tmp_path: Path, capsys) -> None:
    bad = write(tmp_path / "bad.jsonl", ['{"schema": 1, "cell": "to', '{"schema": 1}'])
    with pytest.raises(ResultsError, match=r"bad\.jsonl:1: expected one JSON record per line"):
        read_records([bad])
    err = capsys.readouterr().err.strip().splitlines()  # the first problem is the error
    assert len(err) == 1 and err[0].startswith(f"{bad}:2: status: expected")
    with pytest.raises(ResultsError, match="found nothing; no epbench records remain"):
        read_records([tmp_path / "missing.jsonl"])
    assert capsys.readouterr().err == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsError, match="expected epbench records, found none"):
        read_records([empty])


def test_a_symlink_loop_is_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    (folder / "machine").mkdir(parents=True)
    write(folder / "machine" / "a.jsonl", [json.dumps(v1())])
    os.symlink(folder, folder / "machine" / "loop")  # a folder holding a link to an ancestor
    os.symlink(folder / "machine" / "a.jsonl", folder / "same.jsonl")  # the same file again
    loaded = load_records([folder, folder / "machine", folder / "same.jsonl"])
    assert len(loaded.records) == 1 and loaded.problems == ()
    assert len(loaded.files) == 1


def result_files() -> list[Path]:
    return sorted(RESULTS.rglob("*.jsonl")) if RESULTS.is_dir() else []


def test_every_results_file_loads_and_tabulates() -> None:
    files = result_files()
    if not files:
        pytest.skip(f"no JSONL files under {RESULTS}")
    loaded = load_records(files)
    assert loaded.problems == ()
    for record in loaded.records:
        assert Record.from_dict(record.to_dict()).to_dict() == record.to_dict()
        assert format_record(record)
    assert overview(loaded.records) == overview([r.to_dict() for r in loaded.records])


def test_views_take_records_and_dicts_alike() -> None:
    raw = v1()
    record = as_record(raw)
    assert overview([raw]) == overview([record]) and format_record(raw) == format_record(record)
    assert "W0_1" in format_record(record) and "| toy" in overview([record])
    assert (
        record_key(raw)
        == record_key(record)
        == ("toy", "quick", raw["config_hash"], "gdu", "torch", "cpu", "float64", 0)
    )


class Shown:
    """A measurement as the registry holds it: `format` and `table`."""

    def format(self, record: Record) -> str:
        return f"shown {record.cell}"

    def table(self, records: list[Record]) -> str:
        return f"{len(records)} shown"


def test_overview_asks_each_measurement_and_falls_back_to_a_generic_table() -> None:
    gdu = v1()
    gone = {**upgrade(v1()), "measurement": "retired", "metrics": {"score": 0.5, "x": {"y": 2}}}
    text = overview([gdu, gone, gdu], measurements={"gdu": Shown()})
    assert text.startswith("2 shown") and "retired:" in text
    assert "score" in text and "x.y" in text and "0.5" in text
    assert format_record(gdu, measurements={"gdu": Shown()}) == "shown toy"
    assert "retired" in format_record(gone, measurements={"gdu": Shown()})
    assert "score" in generic_table([gone])
    # the suite's own measurements keep their views while no plugin registers them
    assert overview([gdu], measurements={}) == overview([gdu])


def test_the_writer_checks_and_upgrades_what_it_writes(tmp_path: Path) -> None:
    writer = RecordWriter.at(tmp_path / "m" / "run.jsonl")
    writer.write(v1())
    writer.write(as_record({**v1(), "seed": 1}))
    with pytest.raises(ResultsError, match=r"run\.jsonl: seed: expected an integer"):
        writer.write({**v1(), "seed": "two"})
    lines = writer.path.read_text().splitlines()
    assert [json.loads(line)["schema"] for line in lines] == [SCHEMA_VERSION] * 2
    assert [r.seed for r in read_records([writer.path])] == [0, 1]
    with open(writer.path, "a") as handle:
        handle.write('{"schema": 1, "status": "ok", "cell": "to')
    found = ok_records(writer.path.parent)
    assert sorted(r.seed for r in found.values()) == [0, 1]
    assert all(r.file == str(writer.path) for r in found.values())
