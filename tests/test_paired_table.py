"""The paired table keeps apart runs of one model and estimator that differ in another setting,
and names the setting (epbench.views.paired, epbench.views.settings)."""

from __future__ import annotations

import copy
from typing import Any

from epbench.views.paired import paired_table
from epbench.views.settings import distinguishing
from epbench.views.train import paper_table, seed_summary_table


def _record(seed: int, ep: float, bptt: float, *, model: dict[str, Any]) -> dict[str, Any]:
    def block(test: float) -> dict[str, Any]:
        return {
            "status": "ok",
            "test_error": [9.0, test],
            "train_error": [5.0, test / 2],
            "epoch_seconds": [1.0, 1.0],
            "samples_per_s": 1000.0,
            "epochs_done": 2,
        }

    return {
        "measurement": "train",
        "cell": "table1[model=EB-1h]",
        "task": "table1",
        "variant": {"model": "EB-1h"},
        "backend": "jax",
        "device": "cpu",
        "dtype": "float32",
        "preset": "paper",
        "seed": seed,
        "status": "ok",
        "estimator": "positive",
        "config_hash": str(sorted(model.items())),
        "config": {"model": model, "train": {"epochs": 2}, "dynamics": {"beta": 0.1}},
        "metrics": {"train": {"ep": block(ep), "bptt": block(bptt)}},
    }


def _rows(table: str) -> list[dict[str, str]]:
    header, _, *rows = table.splitlines()
    names = [c.strip() for c in header.split("|")]
    return [dict(zip(names, (c.strip() for c in row.split("|")), strict=True)) for row in rows]


def test_runs_that_differ_in_a_setting_are_rows_of_their_own() -> None:
    ours = {"setting": "EB", "clamp": True}
    papers = {**ours, "output_derivative": False}
    records = [_record(s, 2.0 + s / 10, 4.0, model=ours) for s in range(3)]
    records += [_record(s, 2.0 + s / 10, 2.1 + s / 10, model=papers) for s in range(3)]
    rows = {row["settings"]: row for row in _rows(paired_table(records))}
    assert set(rows) == {"—", "model.output_derivative=false"}
    assert rows["—"]["BPTT test %"] == "4.00 ± 0.00"
    assert rows["model.output_derivative=false"]["BPTT test %"] == "2.20 ± 0.10"
    assert rows["model.output_derivative=false"]["verdict"] == "equivalent (±0.3)"
    paper = {row["settings"]: row for row in _rows(paper_table(records))}
    assert paper["model.output_derivative=false"]["EP estimator"] == "positive"
    seeds = {row["settings"]: row for row in _rows(seed_summary_table(records))}
    assert seeds["model.output_derivative=false"]["BPTT test %"] == "2.20 ± 0.10"
    assert seeds["—"]["EP estimator"] == "positive" and seeds["—"]["BPTT test %"] == "4.00 ± 0.00"


def test_distinguishing_names_only_what_differs_within_a_model() -> None:
    base = {"model": {"sizes": [10, 8]}, "dynamics": {"estimator": "positive", "T": 4}}
    other = copy.deepcopy(base)
    other["dynamics"].update(estimator="symmetric", T=8)
    alone = {"model": {"sizes": [10, 4]}}  # the only group of its model: nothing to tell apart
    found = distinguishing({"a": ("m", base), "b": ("m", other), "c": ("n", alone)})
    assert found == {"a": "dynamics.T=4", "b": "dynamics.T=8", "c": ""}


def test_learning_curves_draw_runs_that_differ_in_a_setting_as_rows_of_their_own() -> None:
    """The figures label runs with `record_settings`: two settings of one model are two rows,
    each averaging its own seeds (they were one row mixing both before)."""
    import pytest

    pytest.importorskip("matplotlib")
    from epbench.views.plots import learning_curves

    ours = {"setting": "EB", "clamp": True}
    papers = {**ours, "output_derivative": False}
    records = [_record(s, 2.0, 4.0, model=ours) for s in range(2)]
    records += [_record(s, 2.0, 2.2, model=papers) for s in range(2)]
    plot = learning_curves(records)
    assert len(plot.figure.axes) == 4  # two rows (settings), train and test columns
    test_axes = plot.figure.axes[1::2]
    finals = sorted(
        next(line for line in ax.lines if line.get_gid() == "bptt").get_ydata()[-1]
        for ax in test_axes
    )
    assert finals == [2.2, 4.0]
