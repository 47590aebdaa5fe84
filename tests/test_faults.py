"""Faults through the command line: a killed coordinator, torn or misshapen checkpoints.

Every run is tiny (torch only; a 16-unit P model on 200 MNIST images, T = 8), so the file stays
within about a minute; the SIGKILL test takes the longest. The slips of the gates and readers
are tested in tests/test_compare.py, tests/test_pivot.py and tests/test_cli.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from epbench.core.checkpoint import load_checkpoint, save_checkpoint
from epbench.core.liveness import WORKER_VARIABLE, coordinator_alive, exit_if_orphaned
from epbench.core.record import read_records
from epbench.measurements.training import _resumed, _Run
from epbench.plugins.registry import Registry

TRAIN = (Path(__file__).parent / "support" / "tiny-train.toml").read_text(encoding="utf-8")


def epbench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "EPBENCH_LOAD_PLUGINS": "torch", **(env or {})}
    command = [sys.executable, "-m", "epbench", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epbench: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def torch_installed() -> None:
    if "torch" not in Registry().get_backends():
        pytest.skip("the torch backend is not installed")


@pytest.fixture
def task(tmp_path: Path, mnist_available: None, torch_installed: None) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TRAIN)
    return path


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime in ns)} of every file under `folder`."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _wait_for(condition, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_coordinator_takes_its_workers_along_and_nothing_is_written_after(
    task: Path, tmp_path: Path
) -> None:
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "results"
    args = ["run", str(task), "--backend", "torch", "--seeds", "0,1", "--no-batch-seeds"]
    args += ["--jobs", "2"]  # two cells, one worker each
    args += ["--set", "train.epochs=10000", "--out", str(out), "--quiet"]  # hours: killed
    env = {**os.environ, "EPBENCH_LOAD_PLUGINS": "torch"}
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "epbench", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # both workers are training once each seed has written a checkpoint
        started = _wait_for(
            lambda: (
                coordinator.poll() is not None or len(list(out.rglob("checkpoints/*.npz"))) >= 2
            ),
            seconds=120,
        )
        assert coordinator.poll() is None, coordinator.stderr.read().decode()
        assert started, "no checkpoints within 120 s"
        workers = psutil.Process(coordinator.pid).children(recursive=True)
        cells = [w for w in workers if "spawn_main" in " ".join(w.cmdline())]
        assert len(cells) == 2, [w.cmdline() for w in workers]
    finally:
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(timeout=30)
        coordinator.stderr.close()
    killed = time.monotonic()
    before = _files(out)
    _, alive = psutil.wait_procs(workers, timeout=5)
    alive = [w for w in alive if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    for worker in alive:
        worker.kill()
    assert not alive, f"{len(alive)} workers outlived their coordinator by 5 s"
    assert time.monotonic() - killed < 5.5
    time.sleep(1.0)  # time for a surviving worker to finish an epoch and write
    assert _files(out) == before


def test_liveness_is_true_outside_workers_and_follows_the_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WORKER_VARIABLE, raising=False)
    assert coordinator_alive()
    exit_if_orphaned()  # returns
    monkeypatch.setenv(WORKER_VARIABLE, f"{os.getppid()}:{os.getpid()}")
    assert coordinator_alive()
    monkeypatch.setenv(WORKER_VARIABLE, f"{os.getppid() + 1}:{os.getpid()}")  # not our parent
    assert coordinator_alive() is (os.name != "posix")
    monkeypatch.setenv(WORKER_VARIABLE, "garbage")
    assert coordinator_alive()


def _train(task: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return epbench("run", str(task), "--backend", "torch", "--out", str(out), "--quiet", *extra)


def _curves(record) -> dict:
    train = record["metrics"]["train"]
    return {a: {k: train[a][k] for k in ("train_error", "test_error", "loss")} for a in train}


def test_torn_or_misshapen_checkpoints_are_discarded_in_one_line_and_the_cell_restarts(
    task: Path, tmp_path: Path
) -> None:
    fresh = _train(task, tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    out = tmp_path / "results"
    first = _train(task, out, "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr
    (ep,) = out.rglob("checkpoints/*_ep.npz")
    (bptt,) = out.rglob("checkpoints/*_bptt.npz")
    ep.write_bytes(ep.read_bytes()[: ep.stat().st_size // 2])  # torn
    saved = load_checkpoint(bptt)
    assert saved is not None
    wrong = {name: value[..., :1] for name, value in saved.params.items()}  # other shapes
    save_checkpoint(bptt, params=wrong, curves=saved.curves, meta=saved.meta)
    resumed = _train(task, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 2, resumed.stderr
    assert lines[0].startswith(f"epbench: checkpoint {ep} discarded: ")
    assert lines[1].startswith(f"epbench: checkpoint {bptt} discarded: expected ")
    assert "shape" in lines[1] and "training from scratch" in lines[1]
    (whole,) = read_records([tmp_path / "fresh"])
    _, again = read_records([out])
    assert again.status == whole.status == "ok"
    assert _curves(again) == _curves(whole)
    for algorithm in ("ep", "bptt"):
        assert again["metrics"]["train"][algorithm]["resumed_from"] == 0
    bptt.write_bytes(b"")  # empty: BPTT restarts, EP continues after its epoch 2
    longer = _train(task, out, "--resume", "--set", "train.epochs=3")
    assert longer.returncode == 0, longer.stderr
    (line,) = longer.stderr.strip().splitlines()
    assert line.startswith(f"epbench: checkpoint {bptt} discarded: ")
    last = read_records([out])[-1]["metrics"]["train"]
    assert (last["ep"]["resumed_from"], last["bptt"]["resumed_from"]) == (2, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_worker_asks_linux_for_the_parent_death_signal() -> None:
    code = (
        "import ctypes, signal; from epbench.run.executors.local import die_with_parent;"
        "assert die_with_parent(); libc = ctypes.CDLL(None); value = ctypes.c_int();"
        "libc.prctl(2, ctypes.byref(value), 0, 0, 0);"  # PR_GET_PDEATHSIG
        "assert value.value == signal.SIGKILL, value"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_complete_checkpoint_of_other_shapes_is_not_accepted_at_equal_epochs(
    tmp_path: Path, capsys
) -> None:
    identity = {"key": "k", "algorithm": "ep", "seed": 0, "steps": 10}
    meta = {**identity, "epoch": 2, "diverged": None, "compile_seconds": 1.0}
    path = tmp_path / "run_ep.npz"
    save_checkpoint(path, params={"W": np.zeros((3, 2))}, curves={"loss": [1.0, 0.5]}, meta=meta)
    fresh = _Run(params={"W": np.ones((2, 3))}, curves={"loss": []})
    assert _resumed(path, fresh, expected=identity, epochs=2) is fresh
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"epbench: checkpoint {path} discarded: expected W of shape (2, 3), found (3, 2); "
        "training from scratch"
    )
    same = _Run(params={"W": np.ones((3, 2))}, curves={"loss": []})
    resumed = _resumed(path, same, expected=identity, epochs=2)
    assert resumed.done == 2 and resumed.curves == {"loss": [1.0, 0.5]}
    assert capsys.readouterr().err == ""
