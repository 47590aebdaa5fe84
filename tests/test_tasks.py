"""Task files: resolution of presets and variants, overrides, and one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from epbench.config.tasks import config_hash, parse_selector, resolve
from epbench.core.errors import TaskError, UnknownNameError
from epbench.plugins.registry import Registry

GOOD = """
description = "test task"
measure = ["gdu"]
[model]
setting = "EB"
inputs = 5
sizes = [10, 8]
activation = "tanh"
epsilon = 0.1
[dynamics]
T = 100
K = 10
beta = 0.01
[data]
source = "toy"
[presets.quick]
dynamics = { T = 20 }
[variants.width.narrow]
model = { sizes = [10, 4] }
[variants.width.wide]
model = { sizes = [10, 64] }
presets.quick.dynamics = { K = 5 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def test_builtin_tasks_are_registered_and_resolve() -> None:
    registry = Registry()
    paths = registry.get_task_paths()
    assert {"toy", "mnist-fc"} <= set(paths)
    toy = resolve(paths["toy"])[0]
    assert (toy.dynamics.T, toy.dynamics.K, toy.dynamics.beta) == (5000, 80, 0.01)
    assert toy.model.input_layers == (0, 1)
    cells = resolve(paths["mnist-fc"], preset="paper")
    assert [c.cell for c in cells] == [
        f"mnist-fc[model={m}]" for m in ("EB-1h", "EB-2h", "EB-3h", "P-1h", "P-2h", "P-3h")
    ]
    p1 = resolve(paths["mnist-fc"], selection={"model": "P-1h"})[0]
    assert (p1.model.setting, p1.dynamics.T, p1.dynamics.K, p1.data.batch) == ("P", 150, 10, 20)
    eb3 = resolve(paths["mnist-fc"], selection={"model": "EB-3h"})[0]
    assert (eb3.model.sizes, eb3.dynamics.T, eb3.dynamics.beta) == (
        (10, 512, 512, 512),
        30000,
        0.02,
    )


def test_presets_variants_and_overrides_merge_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    narrow, wide = resolve(path, preset="quick")
    assert (narrow.cell, narrow.dynamics.T, narrow.dynamics.K, narrow.model.sizes) == (
        "t[width=narrow]",
        20,
        10,
        (10, 4),
    )
    assert (wide.dynamics.T, wide.dynamics.K, wide.model.sizes) == (20, 5, (10, 64))
    (cell,) = resolve(
        path, selection={"width": "wide"}, overrides=["dynamics.K=3", "model.clamp=true"]
    )
    assert (cell.dynamics.K, cell.model.clamp) == (3, True)
    assert config_hash(cell.config) != config_hash(wide.config)


def test_selector_parsing() -> None:
    assert parse_selector("mnist-fc[model=P-1h]") == ("mnist-fc", {"model": "P-1h"})
    assert parse_selector("toy") == ("toy", {})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("T = 100\n", ""), "dynamics.T: expected a positive integer (required), found nothing"),
        (("T = 100", 'T = "100"'), "dynamics.T: expected a positive integer, found '100'"),
        (("K = 10", "K = 1000"), "dynamics.K: expected an integer ≤ dynamics.T (= 100)"),
        (("T = 100", "T = 0"), "dynamics.T: expected a positive integer, found 0"),
        (("beta = 0.01", "beta = 0"), "dynamics.beta: expected a non-zero number, found 0"),
        (
            ('activation = "tanh"', 'activation = "relu"'),
            "model.activation: expected one of tanh, sigm, hardsigm, found 'relu'",
        ),
        (("inputs = 5", "inputs = 5\nbogus = 1"), "model.bogus: expected one of"),
        (("[data]", "[data]\nbatch = 1.5"), "data.batch: expected a positive integer"),
        (('source = "toy"', 'source = "mnist"'), "model: expected inputs = 784"),
        (("T = 100", "T = = 1"), "file: expected valid TOML"),
    ],
)
def test_invalid_task_files_give_one_line_errors(tmp_path: Path, edit, message) -> None:
    path = write(tmp_path, GOOD.replace(*edit, 1))
    with pytest.raises(TaskError) as err:
        resolve(path)
    text = str(err.value)
    assert message in text
    assert "\n" not in text and str(path) in text


def test_unknown_names_list_what_exists(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(UnknownNameError, match="known: narrow, wide"):
        resolve(path, selection={"width": "huge"})
    with pytest.raises(UnknownNameError, match="known: paper, quick"):
        resolve(path, preset="fast")
    with pytest.raises(UnknownNameError, match=r"known: .*toy"):
        Registry().get_task_path("nope")
