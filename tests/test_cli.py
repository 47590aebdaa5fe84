"""End-to-end tests of the `epbench` command line, run as a user would (a subprocess)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from epbench.core.metrics import gdu_metrics
from epbench.core.record import SCHEMA_VERSION, read_records
from epbench.core.traces import load_traces
from epbench.plugins.registry import Registry

TASK = """
description = "tiny"
[model]
setting = "EB"
inputs = 5
sizes = [10, 8]
activation = "tanh"
epsilon = 0.2
[dynamics]
T = 200
K = 10
beta = 0.01
[data]
source = "toy"
"""


def epbench(
    *args: str, env: dict | None = None, plugins: str = "torch"
) -> subprocess.CompletedProcess:
    full = {**os.environ, "EPBENCH_LOAD_PLUGINS": plugins, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "epbench", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
    )


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epbench: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def torch_installed() -> None:
    if "torch" not in Registry().get_backends():
        pytest.skip("the torch backend is not installed")


def test_backends_and_tasks_list(torch_installed: None) -> None:
    out = epbench("backends")
    assert out.returncode == 0 and "torch" in out.stdout
    assert "capabilities" in out.stdout and "reference" in out.stdout  # torch's P-conv re-creation
    assert "model fields" not in out.stdout
    detail = epbench("backends", "--detail")
    assert detail.returncode == 0 and "model fields" in detail.stdout
    assert "feedback_angle" in detail.stdout
    plugins = epbench("plugins")
    assert plugins.returncode == 0 and "epbench_torch.plugin" in plugins.stdout
    assert "epbench_register_backends" in plugins.stdout
    out = epbench("tasks")
    assert out.returncode == 0 and "mnist-fc[model=P-1h]" in out.stdout and "quick" in out.stdout


def test_run_toy_prints_per_layer_table_and_saved_traces_reproduce_metrics(
    torch_installed: None, tmp_path: Path
) -> None:
    proc = epbench(
        "run",
        "toy",
        "--backend",
        "torch",
        "--preset",
        "quick",
        "--out",
        str(tmp_path),
        "--save-traces",
    )
    assert proc.returncode == 0, proc.stderr
    for header in ("RMSE (mean ± std)", "cosine (total)", "sign", "W0_1", "W1_x", "s1"):
        assert header in proc.stdout
    (path,) = tmp_path.rglob("*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["status"] == "ok" and record["schema"] == SCHEMA_VERSION
    assert record["environment"]["backend_versions"]["torch"].startswith("2.")
    assert record["environment"]["commit"]
    assert record["metrics"]["saturated_outputs"] is None  # tanh does not saturate
    assert "output units at 0 or 1" not in proc.stdout
    for name in ("W0_1", "W0_x", "W1_x", "b0", "b1", "s0", "s1"):
        assert {"rmse", "cosine", "sign"} <= set(record["metrics"]["gdu"][name])
    saved = load_traces(path.parent / record["traces"])
    assert saved["data"]["x"].shape == (1, 5) and set(saved["params"]) == {
        "W0_1",
        "W0_x",
        "W1_x",
        "b0",
        "b1",
    }
    assert saved["ep"]["W0_1"].shape == (40, 10, 50)
    again = gdu_metrics(saved["bptt"], saved["ep"])
    for name, metrics in record["metrics"]["gdu"].items():
        for key in ("rmse", "rmse_std", "cosine", "sign", "rel_error"):
            assert np.isclose(again[name][key], metrics[key], rtol=1e-12, atol=0), (name, key)
    table = epbench("table", str(tmp_path), "--detail")
    assert table.returncode == 0 and "toy" in table.stdout and "W0_1" in table.stdout


def test_set_override_and_task_file_path(torch_installed: None, tmp_path: Path) -> None:
    task = tmp_path / "tiny.toml"
    task.write_text(TASK)
    proc = epbench(
        "run", str(task), "--set", "dynamics.K=5", "--out", str(tmp_path / "r"), "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").rglob("*.jsonl")
    record = json.loads(path.read_text())
    assert record["config"]["dynamics"]["K"] == 5 and record["cell"] == "tiny"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "nosuchtask"], ["unknown task 'nosuchtask'", "mnist-fc", "toy"]),
        (["run", "toy", "--backend", "nosuch"], ["unknown backend 'nosuch'", "torch"]),
        (["run", "toy", "--preset", "fast"], ["unknown preset", "paper, quick"]),
        (["run", "mnist-fc[model=P-9h]"], ["P-9h", "P-1h"]),
        (["run", "toy", "--set", "dynamics.K=9000"], ["dynamics.K", "≤ dynamics.T"]),
        (["table", "no/such/results"], ["no/such/results"]),
        (["run", "toy", "--repeat", "-1"], ["--repeat: expected an integer ≥ 0, found -1"]),
        (["run", "toy", "--nosuch"], ["--nosuch", "epbench run --help"]),
        (["parity", "toy", "--backend", "torch"], ["two or more backends", "['torch']"]),
        (["run", "toy", "--device", "tpu"], ["--device: expected one of cpu, cuda, found 'tpu'"]),
        (["table", ".", "--against", "papr"], ["--against: expected one of paper, found 'papr'"]),
        (["compare", ".", ".", "--threshold", "nan"], ["--threshold", "finite number > 0"]),
    ],
)
def test_bad_names_give_one_line_errors(torch_installed: None, args, fragments) -> None:
    one_line_error(epbench(*args), *fragments)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (("K = 10", "K = 300"), "dynamics.K: expected an integer ≤ dynamics.T (= 200), found 300"),
        (("T = 200", "T = 0"), "dynamics.T: expected a positive integer, found 0"),
        (("beta = 0.01", "beta = 0.0"), "dynamics.beta: expected a non-zero number, found 0.0"),
        (('activation = "tanh"', 'activation = "relu"'), "model.activation: expected one of"),
        (
            ("inputs = 5\n", ""),
            "model.inputs: expected a positive integer (required), found nothing",
        ),
        (
            ("sizes = [10, 8]", 'sizes = "10,8"'),
            "model.sizes: expected a list of positive integers",
        ),
    ],
)
def test_invalid_task_files_exit_2(torch_installed: None, tmp_path: Path, edit, fragment) -> None:
    task = tmp_path / "bad.toml"
    task.write_text(TASK.replace(*edit))
    one_line_error(epbench("run", str(task), "--out", str(tmp_path)), fragment, str(task))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _mnist_cell_args(data_dir: Path, out: Path) -> list[str]:
    return [
        "run",
        "mnist-fc[model=P-1h]",
        "--preset",
        "quick",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]


def test_bad_data_files_exit_2_and_keep_earlier_records(
    torch_installed: None, tmp_path: Path, mnist_available: None
) -> None:
    from epbench.config.datasets import find_file

    out = tmp_path / "results"
    first = epbench("run", "toy", "--preset", "quick", "--out", str(out), "--quiet")
    assert first.returncode == 0
    (records,) = out.rglob("*.jsonl")
    before = records.read_bytes()
    offline = {
        "EPBENCH_DATA": "",
        "EPBENCH_CACHE": str(tmp_path / "cache"),
        "EPBENCH_MIRRORS": f"http://127.0.0.1:{_closed_port()}/",
    }

    images = find_file("mnist", "train-images-idx3-ubyte", download=False)
    labels = find_file("mnist", "train-labels-idx1-ubyte", download=False)
    raw_images = (
        gzip.decompress(images.read_bytes()) if images.suffix == ".gz" else images.read_bytes()
    )
    raw_labels = (
        gzip.decompress(labels.read_bytes()) if labels.suffix == ".gz" else labels.read_bytes()
    )
    cases = {
        "magic": (raw_images[:3] + b"\x09" + raw_images[4:], "expected magic 2051"),
        "truncated": (raw_images[: len(raw_images) // 2], "bytes of pixels after the header"),
        "checksum": (raw_images[:-1] + bytes([raw_images[-1] ^ 1]), "not the original"),
    }
    for label, (content, diagnosis) in cases.items():
        folder = tmp_path / label / "mnist"
        folder.mkdir(parents=True)
        (folder / "train-images-idx3-ubyte").write_bytes(content)
        (folder / "train-labels-idx1-ubyte").write_bytes(raw_labels)
        proc = epbench(*_mnist_cell_args(tmp_path / label, out), env=offline)
        one_line_error(proc, "train-images-idx3-ubyte", "checksum mismatch", diagnosis)
    (tmp_path / "empty").mkdir()
    missing = epbench(*_mnist_cell_args(tmp_path / "empty", out), env=offline)
    one_line_error(missing, "--data-dir", "EPBENCH_DATA")
    assert records.read_bytes() == before
    assert list(out.rglob("*.jsonl")) == [records]


def test_parity_and_profile_write_records(torch_installed: None, tmp_path: Path) -> None:
    if "jax" not in Registry().get_backends():
        pytest.skip("the jax backend is not installed")
    proc = epbench(
        "parity",
        "toy",
        "--backend",
        "torch,jax",
        "--preset",
        "quick",
        "--out",
        str(tmp_path),
        plugins="torch,jax",
    )
    assert proc.returncode == 0, proc.stderr
    assert "torch ↔ jax" in proc.stdout and "records appended to" in proc.stdout
    (record,) = read_records([tmp_path])
    assert record["measurement"] == "parity" and record["reference"] == "torch"
    assert record["status"] == "ok" and record["metrics"]["parity"]["max"] <= 1e-10
    out = tmp_path / "profile"
    args = (
        "--algorithm",
        "bptt",
        "--steps",
        "1",
        "--set",
        "dynamics.T=20",
        "--set",
        "dynamics.K=5",
    )
    proc = epbench("profile", "toy", "--backend", "torch", *args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "toy · torch · cpu · bptt:" in proc.stdout and "ms per step" in proc.stdout
    (record,) = read_records([out])
    assert record["measurement"] == "profile" and set(record["metrics"]["profile"]) == {"bptt"}
    assert list(out.rglob("profiles/*.prof"))


TINY_TOY = ("--set", "dynamics.T=20", "--set", "dynamics.K=5", "--quiet")


def test_usage_errors_write_nothing(torch_installed: None, tmp_path: Path) -> None:
    out = tmp_path / "results"
    for bad, fragment in (
        (["--device", "tpu"], "--device"),
        (["--jobs", "0"], "--jobs"),
        (["--backend", "torch,nosuch"], "unknown backend 'nosuch'"),
    ):
        one_line_error(epbench("run", "toy", *TINY_TOY, "--out", str(out), *bad), fragment)
    assert not out.exists()


def test_readers_agree_on_empty_inputs_loops_torn_lines_and_unknown_metrics(
    torch_installed: None, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    proc = epbench("run", "toy", "--backend", "torch,torch", *TINY_TOY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(read_records([out])) == 1, "--backend torch,torch runs the cell once"
    (records,) = out.rglob("*.jsonl")
    (out / "loop").symlink_to(out, target_is_directory=True)  # a folder holding itself
    table = epbench("table", str(out))
    assert table.returncode == 0 and table.stderr == "", table.stderr
    assert sum(line.startswith("| toy ") for line in table.stdout.splitlines()) == 1
    (out / "empty.jsonl").write_text("")
    (tmp_path / "none").mkdir()
    figures = ["--out", str(tmp_path / "figures")]
    for command, extra in (("table", []), ("plot", figures), ("report", figures)):
        for empty in (out / "empty.jsonl", tmp_path / "none"):
            proc = epbench(command, str(empty), *extra)
            one_line_error(proc, str(empty), "expected epbench records")
    assert not (tmp_path / "figures").exists()
    one_line_error(
        epbench("table", str(out), "--pivot", "backend", "--metric", "cosin"),
        "--metric: expected one of residual,",
        "cosine",
        "'cosin'",
    )
    pivot = epbench("table", str(out), "--pivot", "backend", "--metric", "metrics.gdu.b0.rmse")
    assert pivot.returncode == 0 and "backend=torch" in pivot.stdout, pivot.stderr
    with records.open("a") as handle:
        handle.write('{"schema": 1, "measur')  # a torn last line
    torn = epbench("table", str(out))
    assert torn.returncode == 0 and "| toy " in torn.stdout
    (line,) = torn.stderr.strip().splitlines()
    assert "torn last line" in line and "Warning" not in line, torn.stderr
