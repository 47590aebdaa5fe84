"""Real records for the query, export and report tests: small real runs into a temporary folder.

`real_results(folder)` runs, in this process (`--executor inline`), the toy GDU cell on every
installed backend, the `speed` task's toy cell (quick preset, torch) and, when MNIST can be
found, the tiny training task; about 20 s on two cores. Returns the results folder.
`shared_results` runs them once per test session.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from epbench.cli import main
from epbench.config import datasets as data
from epbench.core.errors import DataError
from epbench.plugins.registry import Registry

TINY_TRAIN = Path(__file__).with_name("tiny-train.toml")


def mnist_found() -> bool:
    try:
        data.find_file("mnist", "train-labels-idx1-ubyte", download=False)
    except DataError:
        return False
    return True


def real_results(folder: Path) -> Path:
    backends = ",".join(Registry().get_backends())
    common = ["--out", str(folder), "--executor", "inline", "--quiet"]
    runs = [["run", "toy", "--backend", backends, *common]]
    if "torch" in backends.split(","):
        runs.append(["run", "speed[model=toy]", "--preset", "quick", "--backend", "torch", *common])
        if mnist_found():
            runs.append(["run", str(TINY_TRAIN), "--backend", "torch", *common])
    for argv in runs:
        assert main(argv) == 0, argv
    return folder


def shared_results(tmp_path_factory: object) -> Path:
    """`real_results` run once per test session (the session's base temporary folder holds
    them); tests that add records copy the folder first."""
    folder = tmp_path_factory.getbasetemp() / "epbench-real-records"  # type: ignore[attr-defined]
    done = folder / ".complete"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        real_results(folder)
        done.write_text("ok\n")
    return folder
