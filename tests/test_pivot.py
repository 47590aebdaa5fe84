"""`epbench table --pivot KEY --metric M` (epbench.views.pivot), the `--sweep` axes it pivots on,
and the `select` / wildcard selection of task cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epbench.cli import main
from epbench.config.tasks import parse_sweep, resolve
from epbench.core.errors import EpbenchError, TaskError, UnknownNameError
from epbench.plugins.registry import Registry
from epbench.views.pivot import key_value, metric_value, pivot_rows, pivot_table


def record(**fields) -> dict:
    """A record as the runner writes it, with only what the pivot reads."""
    depth = fields.pop("depth", 1)
    cosine = fields.pop("cosine", 0.99)
    out = {
        "task": "t",
        "cell": "t",
        "preset": "quick",
        "measurement": "gdu",
        "backend": "torch",
        "device": "cpu",
        "dtype": "float64",
        "seed": 0,
        "status": "ok",
        "estimator": "positive",
        "angle": None,
        "depth": depth,
        "variant": {},
        "config": {"model": {"setting": "P"}, "dynamics": {"estimator": "positive", "T": 10}},
        "metrics": {
            "residual": 1e-12,
            "gdu": {"W0_1": {"cosine": cosine, "rmse": 0.1}, "b0": {"cosine": 1.0, "rmse": 0.3}},
        },
    }
    out.update(fields)
    return out


def test_pivot_by_a_record_field_merges_the_axis_it_determines() -> None:
    # depth-scaling names cells by model (P-1h, P-2h); depth determines the model axis: one row
    records = [
        record(depth=d, cosine=c, variant={"model": f"P-{d}h"}, cell=f"t[model=P-{d}h]")
        for d, c in ((1, 0.9), (2, 0.8), (3, 0.7))
    ]
    records.append(record(depth=2, cosine=0.5, variant={"model": "P-2h"}, backend="jax"))
    _, columns, rows = pivot_rows(records, key="depth", metric="cosine")
    assert columns == [1, 2, 3]
    assert [row[0] for row in rows] == ["t", "t"]  # the model axis is gone from the rows
    torch_row = next(row for row in rows if row[3] == "torch")
    jax_row = next(row for row in rows if row[3] == "jax")
    assert torch_row[6:] == [0.9, 0.8, 0.7]  # smallest cosine over names
    assert jax_row[6:] == [None, 0.5, None]
    text = pivot_table(records, key="depth", metric="cosine")
    assert "depth=1" in text and "0.7" in text and "smallest cosine" in text


def test_pivot_keeps_axes_the_key_does_not_determine() -> None:
    records = [
        record(
            estimator=e,
            variant={"model": m, "estimator": e},
            metrics={"residual": r, "gdu": {}},
        )
        for (m, e, r) in (
            ("A", "positive", 1.0),
            ("A", "symmetric", 2.0),
            ("B", "positive", 3.0),
            ("B", "symmetric", 4.0),
        )
    ]
    _, columns, rows = pivot_rows(records, key="estimator", metric="residual")
    assert columns == ["positive", "symmetric"]
    assert sorted((row[0], *row[6:]) for row in rows) == [
        ("t[model=A]", 1.0, 2.0),
        ("t[model=B]", 3.0, 4.0),
    ]


def test_pivot_by_config_path_averages_seeds_and_shows_statuses() -> None:
    def with_estimator(e: str, seed: int, value: float, status: str = "ok") -> dict:
        r = record(seed=seed, status=status, metrics={"residual": value, "gdu": {}})
        r["config"] = {"model": {"setting": "P"}, "dynamics": {"estimator": e}}
        return r

    records = [
        with_estimator("positive", 0, 1.0),
        with_estimator("positive", 1, 3.0),
        with_estimator("symmetric", 0, 5.0, status="diverged"),
    ]
    assert key_value(records[0], "dynamics.estimator") == "positive"
    _, columns, rows = pivot_rows(records, key="dynamics.estimator", metric="residual")
    assert columns == ["positive", "symmetric"] and rows[0][6:] == [2.0, "diverged"]


def test_metric_paths_and_training_metrics() -> None:
    r = record(measurement="train")
    r["metrics"] = {
        "train": {"ep": {"test_error": [9.0, 4.5]}, "bptt": {"test_error": [8.0, 4.0]}},
        "ep_minus_bptt": {"test_error": 0.5},
    }
    assert metric_value(r, "ep_test") == 4.5 and metric_value(r, "bptt_test") == 4.0
    assert metric_value(r, "ep_minus_bptt") == 0.5
    assert metric_value(record(), "metrics.gdu.b0.rmse") == 0.3
    assert metric_value(record(), "metrics.nothing") is None
    # a metric no record has leaves no row
    assert pivot_rows([record()], key="depth", metric="ep_test")[2] == []


def test_unknown_pivot_key_is_an_error() -> None:
    with pytest.raises(EpbenchError, match="no record has the key 'nope'"):
        pivot_rows([record()], key="nope", metric="cosine")


def test_sweep_and_select_resolve_cells(tmp_path: Path) -> None:
    assert parse_sweep("dynamics.estimator=positive,symmetric") == (
        "estimator",
        {
            "positive": {"dynamics": {"estimator": "positive"}},
            "symmetric": {"dynamics": {"estimator": "symmetric"}},
        },
    )
    for bad in ("dynamics.estimator", "x=a,,b", "x=a,a", "=a"):
        with pytest.raises(TaskError):
            parse_sweep(bad)
    path = Registry().get_task_path("toy")
    cells = resolve(path, preset="quick", sweeps=["dynamics.estimator=positive,symmetric"])
    assert [(c.cell, c.dynamics.estimator) for c in cells] == [
        ("toy[estimator=positive]", "positive"),
        ("toy[estimator=symmetric]", "symmetric"),
    ]
    # a sweep wins over --set; a selection picks a swept value
    cells = resolve(
        path,
        selection={"estimator": "symmetric"},
        overrides=["dynamics.estimator=negative"],
        sweeps=["dynamics.estimator=positive,symmetric"],
    )
    assert [c.dynamics.estimator for c in cells] == ["symmetric"]
    with pytest.raises(TaskError, match="an axis not in task"):  # mnist-fc has a model axis
        resolve(Registry().get_task_path("mnist-fc"), sweeps=["extra.model=a,b"])
    task = tmp_path / "sel.toml"
    task.write_text(
        'select = { width = "w*" }\n'
        + Path(path).read_text()
        + "\n[variants.width.w10]\nmodel = { sizes = [10, 10] }\n"
        + "[variants.width.w20]\nmodel = { sizes = [10, 20] }\n"
        + "[variants.width.narrow]\nmodel = { sizes = [10, 3] }\n"
    )
    assert [c.cell for c in resolve(task)] == ["sel[width=w10]", "sel[width=w20]"]
    assert len(resolve(task, selection={"width": "*"})) == 3
    assert [c.cell for c in resolve(task, selection={"width": "narrow"})] == ["sel[width=narrow]"]
    with pytest.raises(UnknownNameError):
        resolve(task, selection={"width": "x*"})


def test_cli_pivot_on_real_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """End to end: a toy GDU run swept over two estimators, then `epbench table --pivot`."""
    names = sorted(Registry().get_backends(), key=lambda n: n != "torch")  # torch: no compiling
    if not names:
        pytest.skip("no backend installed")
    backend = names[0]
    common = ["--out", str(tmp_path), "--quiet", "--backend", backend, "--executor", "inline"]
    sweep = ["--sweep", "dynamics.estimator=positive,symmetric", "--set", "dynamics.T=400"]
    assert main(["run", "toy", "--preset", "quick", *common, *sweep]) == 0
    files = list(tmp_path.rglob("*.jsonl"))
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [(r["estimator"], r["variant"], r["depth"], r["angle"]) for r in records] == [
        ("positive", {"estimator": "positive"}, 1, None),
        ("symmetric", {"estimator": "symmetric"}, 1, None),
    ]
    capsys.readouterr()
    assert main(["table", str(tmp_path), "--pivot", "estimator", "--metric", "rel_error"]) == 0
    shown = capsys.readouterr().out
    lines = [line for line in shown.splitlines() if line.startswith("| toy")]
    assert len(lines) == 1 and "estimator=positive" in shown and "estimator=symmetric" in shown
    positive, symmetric = (float(v) for v in lines[0].strip(" |").split("|")[-2:])
    assert symmetric < positive / 10  # β = 0.01: O(β) against O(β²)
    assert main(["table", str(tmp_path), "--pivot", "nope"]) == 2
    assert "no record has the key" in capsys.readouterr().err
