"""Executors (epbench.run.executors): worker subprocesses, a Dask cluster, resume, atomic records.

The matrices are the toy task's `quick` preset with tiny phases (T = 30, K = 5), on the torch and
jax backends, or on `counted-torch` (tests/support/epbench_counting.py: the torch backend under
another name, appending a line per cell it runs to EPBENCH_COUNT_FILE, and able to hang one cell
so the test can kill that worker). The plugin is installed for these tests as a `.dist-info`
folder on PYTHONPATH, so worker processes find it as they find any installed backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import epbench.cli as cli
from epbench.config.tasks import resolve
from epbench.core.errors import EpbenchError, ResultsError
from epbench.core.record import read_records
from epbench.plugins.manager import make_plugin_manager
from epbench.plugins.registry import Registry
from epbench.run.executors import make_executor
from epbench.run.matrix import run_matrix
from epbench.run.resolve import RunOptions
from epbench.run.store import RecordWriter, ok_records

SUPPORT = Path(__file__).resolve().parent / "support"
TINY = ("dynamics.T=30", "dynamics.K=5")
PLUGINS = "torch,jax,counting"
COUNTING_ONLY = {"EPBENCH_LOAD_PLUGINS": "counting"}  # counted-torch imports torch alone, not jax


def tiny_args(*, backends: str, seeds: str, out: Path) -> list[str]:
    sets = [arg for pair in TINY for arg in ("--set", pair)]
    where = ["--backend", backends, "--seeds", seeds, "--out", str(out)]
    return ["run", "toy", "--preset", "quick", *sets, "--repeat", "0", *where]


@pytest.fixture(scope="module", autouse=True)
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Install the counting plugin for this module (and its subprocesses) and share one jax
    compilation cache between the workers (the same programs compile once)."""
    names = Registry(make_plugin_manager(select=["torch", "jax"])).get_backends()
    if not {"torch", "jax"} <= set(names):
        pytest.skip("needs the torch and jax backends installed")
    folder = tmp_path_factory.mktemp("plugins")
    info = folder / "epbench_counting_test-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: epbench-counting-test\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text("[epbench]\ncounting = epbench_counting\n")
    paths = [str(folder), str(SUPPORT), os.environ.get("PYTHONPATH", "")]
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "EPBENCH_LOAD_PLUGINS": PLUGINS,
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax-cache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # LocalCluster workers and pool workers inherit this environment
    sys.path[:0] = [str(folder), str(SUPPORT)]
    yield env
    del sys.path[:2]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def epbench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "epbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def flat(value: object, prefix: str = "") -> dict[str, object]:
    """Nested metrics → {"gdu.W0_1.rmse": 1.05, "gdu.W0_1.cosine_per_step.0": …, …}."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()
        }
    return {prefix.rstrip("."): value}


def by_cell(records: list[dict]) -> dict[tuple, dict]:
    return {(r["cell"], r["backend"], r["seed"], r["measurement"]): r for r in records}


def assert_same_records(ours: list[dict], reference: list[dict]) -> None:
    """Same cells, same statuses, metrics equal to floating tolerance."""
    ours_by, reference_by = by_cell(ours), by_cell(reference)
    assert len(ours_by) == len(ours) and ours_by.keys() == reference_by.keys()
    for key, record in ours_by.items():
        other = reference_by[key]
        assert record["status"] == other["status"] == "ok", (key, record.get("reason"))
        a, b = flat(record["metrics"]), flat(other["metrics"])
        assert a.keys() == b.keys() and len(a) > 20, key
        for name, value in a.items():
            if value is None or b[name] is None:
                assert value is b[name], (key, name)
            else:
                assert math.isclose(value, b[name], rel_tol=1e-7, abs_tol=1e-10), (key, name)


def counted(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@contextlib.contextmanager
def kill_when_hung(marker: Path) -> Iterator[None]:
    """While the block runs, SIGKILL the process that claims `marker` (epbench_counting)."""
    pid_file = marker.with_name(marker.name + ".pid")
    pid_file.unlink(missing_ok=True)
    done = threading.Event()

    def watch() -> None:
        while not pid_file.exists():
            if done.wait(0.05):
                return
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert pid_file.exists(), "no cell hung: nothing was killed"


# ---- the local executor: --jobs 1 and --jobs 2 --------------------------------------------------


@pytest.fixture(scope="module")
def local_records(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict]]:
    """The 6-cell matrix (torch and jax × seeds 0, 1, 2) run by `epbench run --jobs N`."""
    runs = {}
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"jobs{jobs}")
        proc = epbench(
            *tiny_args(backends="torch,jax", seeds="0,1,2", out=out), "--jobs", str(jobs)
        )
        assert proc.returncode == 0, proc.stderr
        runs[jobs] = read_records([out])
        if jobs == 2:
            assert "6/6 done · 0 running · 0 failed" in proc.stderr, proc.stderr
        else:
            assert "[6/6] toy on jax seed 2" in proc.stderr, proc.stderr
    return runs


@pytest.mark.slow  # worker processes importing torch and jax
def test_jobs_2_gives_the_records_of_jobs_1(local_records: dict[int, list[dict]]) -> None:
    one, two = local_records[1], local_records[2]
    assert len(one) == len(two) == 6
    assert_same_records(two, one)
    # Each cell ran in a worker subprocess, not in the coordinator; --jobs 2 used two of them.
    assert {r["environment"]["executor"] for r in one + two} == {"local"}
    assert len({r["environment"]["pid"] for r in one}) == 1
    assert len({r["environment"]["pid"] for r in two}) == 2
    assert all(r["attempts"] == 1 for r in one + two)


# ---- the Dask executor ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Dask LocalCluster of 2 single-threaded worker processes; a task whose worker dies fails
    at once (allowed-failures 0) instead of being tried on another worker. Its workers count
    `counted-*` cells in `cluster.counts` and hang on `cluster.hang` (epbench_counting): the
    environment is read when a worker starts."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("cluster")
    counts, hang = folder / "counts", folder / "hang"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EPBENCH_COUNT_FILE", str(counts))
        patch.setenv("EPBENCH_COUNT_HANG", str(hang))
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            with distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as local:
                local.counts, local.hang = counts, hang
                yield local


def toy_cells() -> list:
    path = Registry(make_plugin_manager(select=[])).get_task_path("toy")
    return resolve(path, name="toy", preset="quick", overrides=list(TINY))


@pytest.mark.slow  # worker processes importing torch and jax
def test_dask_cluster_gives_the_records_of_the_local_executor(
    cluster, local_records: dict[int, list[dict]], tmp_path: Path
) -> None:
    registry = Registry(make_plugin_manager(select=["torch", "jax"]))
    backends = [registry.get_backend("torch"), registry.get_backend("jax")]
    writer = RecordWriter(tmp_path, commit="test")
    executor = make_executor("dask", scheduler=cluster.scheduler_address)
    lines = []
    try:
        assert executor.slots() == 2
        records = run_matrix(
            toy_cells(),
            backends,
            options=RunOptions(seeds=(0, 1, 2), repeat=0),
            writer=writer,
            executor=executor,
            progress=lines.append,
        )
        workers = set(executor.client.run(os.getpid).values())
    finally:
        executor.close()
    assert [(r["backend"], r["seed"]) for r in records] == [
        (b, s) for b in ("torch", "jax") for s in (0, 1, 2)
    ]
    assert_same_records(read_records([writer.path]), local_records[1])  # records as written
    assert {r["environment"]["pid"] for r in records} <= workers and os.getpid() not in workers
    assert all(r["environment"]["executor"] == "dask" for r in records)
    assert lines[-1].startswith("[6/6 done · 0 running · 0 failed")


def test_killed_dask_worker_fails_its_cell_only_and_resume_finishes(
    cluster, tmp_path: Path
) -> None:
    counts, marker = cluster.counts, cluster.hang
    marker.write_text(str(len(counted(counts)) + 2))  # the third cell to start hangs: killed
    before = len(counted(counts))
    backend = Registry(make_plugin_manager(select=["counting"])).get_backend("counted-torch")
    options = RunOptions(seeds=tuple(range(6)), repeat=0)
    out = tmp_path / "out"

    def run(resume: bool) -> list[dict]:
        executor = make_executor("dask", scheduler=cluster.scheduler_address)
        try:
            return run_matrix(
                toy_cells(),
                [backend],
                options=RunOptions(seeds=options.seeds, repeat=0, resume=resume),
                writer=RecordWriter(out, commit="test"),
                executor=executor,
            )
        finally:
            executor.close()

    with kill_when_hung(marker):
        first = run(resume=False)
    statuses = [r["status"] for r in first]
    assert statuses.count("failed") == 1 and statuses.count("ok") == 5, statuses
    (lost,) = [r for r in first if r["status"] == "failed"]
    assert lost["reason"].startswith("worker lost: ") and "KilledWorker" in lost["reason"]
    assert lost["measurement"] == "gdu" and lost["backend"] == "counted-torch"
    assert len(counted(counts)) == before + 6  # 5 cells done + the one killed while it ran
    assert not marker.exists()  # claimed: no cell hangs any more

    second = run(resume=True)
    assert len(counted(counts)) == before + 7, "only the failed cell ran again"
    assert [r["status"] for r in second] == ["ok"] * 6
    assert [r["seed"] for r in second] == list(range(6))
    assert second[first.index(lost)]["environment"]["executor"] == "dask"
    assert len(read_records([out])) == 7  # 6 of the first run (one failed) + 1


# ---- crashes, kills and resume with the local executor -------------------------------------------


@pytest.mark.slow  # worker processes importing torch and jax
def test_local_worker_crash_fails_only_its_cell_and_retries_run_it_again(tmp_path: Path) -> None:
    counts, marker, out = tmp_path / "counts", tmp_path / "hang", tmp_path / "out"
    marker.write_text("1")  # the second cell to start hangs; its worker gets SIGKILL
    env = {**COUNTING_ONLY, "EPBENCH_COUNT_FILE": str(counts), "EPBENCH_COUNT_HANG": str(marker)}
    args = tiny_args(backends="counted-torch", seeds="0,1,2,3", out=out)
    with kill_when_hung(marker):
        proc = epbench(*args, "--jobs", "2", "--retries", "1", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "failed, trying again (attempt 2)" in proc.stderr
    records = read_records([out])
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3]
    assert [r["status"] for r in records] == ["ok"] * 4
    assert sorted(r["attempts"] for r in records) == [1, 1, 1, 2]
    assert len(counted(counts)) == 5  # 4 cells + the killed attempt: no other cell ran twice
    assert len({line.split()[1] for line in counted(counts)}) == 3  # a new worker replaced it


@pytest.mark.slow  # worker processes importing torch and jax
def test_sigkill_mid_run_leaves_parseable_records_and_resume_finishes(tmp_path: Path) -> None:
    counts, marker, out = tmp_path / "counts", tmp_path / "hang", tmp_path / "out"
    marker.write_text("2")  # the third cell hangs: two records are written by then
    env = {**os.environ, **COUNTING_ONLY, "EPBENCH_COUNT_FILE": str(counts)}
    env["EPBENCH_COUNT_HANG"] = str(marker)
    args = tiny_args(backends="counted-torch", seeds="0,1,2,3,4,5", out=out)
    run = subprocess.Popen(
        [sys.executable, "-m", "epbench", *args, "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pid_file = marker.with_name("hang.pid")
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert pid_file.exists(), run.stderr.read() if run.poll() is not None else "no hang"
    run.send_signal(signal.SIGKILL)  # the coordinator, in the middle of the matrix
    run.wait(timeout=30)
    run.stderr.close()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its orphaned worker
    assert len(list(out.rglob("*.jsonl"))) == 1
    first = read_records([out])  # raises on any torn or foreign line
    assert [r["seed"] for r in first] == [0, 1] and len(counted(counts)) == 3

    resumed = epbench(*args, "--resume", env={**COUNTING_ONLY, "EPBENCH_COUNT_FILE": str(counts)})
    assert resumed.returncode == 0, resumed.stderr
    assert "2 of 6 cells have ok records: not run again" in resumed.stderr
    assert len(counted(counts)) == 3 + 4, "cells 2–5 ran, 0 and 1 were not recomputed"
    records = read_records([out])
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3, 4, 5]
    assert all(r["status"] == "ok" for r in records)
    assert "| toy" in resumed.stdout and resumed.stdout.count("counted-torch") >= 6


def test_appends_stay_whole_when_the_writer_is_killed(tmp_path: Path) -> None:
    """SIGKILL at random instants of a process writing large records: every file stays
    readable (a plain append can leave half a line: the kernel stops writes between pages)."""
    writer_code = (
        "import sys; from pathlib import Path; from epbench.run.store import RecordWriter\n"
        "w = RecordWriter.at(Path(sys.argv[1]))\n"
        "big = 'x' * 400_000\n"
        "print('ready', flush=True)\n"
        "for i in range(10_000): w.write({'schema': 1, 'status': 'ok', 'i': i, 'pad': big})\n"
    )
    for attempt in range(4):
        path = tmp_path / f"run{attempt}.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-c", writer_code, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.15 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        records = read_records([path])
        assert records and [r["i"] for r in records] == list(range(len(records)))
        assert path.read_bytes().endswith(b"\n")


# ---- resume keys and tolerant reading, in process -----------------------------------------------


def test_resume_reruns_only_missing_failed_or_changed_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    counts = tmp_path / "counts"
    monkeypatch.setenv("EPBENCH_COUNT_FILE", str(counts))
    backend = Registry(make_plugin_manager(select=["counting"])).get_backend("counted-torch")
    out = tmp_path / "out"

    runs = iter(range(10))

    def run(seeds: tuple[int, ...], *, resume: bool, cells: list | None = None) -> list[dict]:
        return run_matrix(
            cells or toy_cells(),
            [backend],
            options=RunOptions(seeds=seeds, repeat=0, resume=resume),
            writer=RecordWriter(out, commit=f"run{next(runs)}"),  # one file per run
        )

    first = run((0, 1), resume=False)
    assert len(counted(counts)) == 2 and first[0]["environment"]["executor"] == "inline"
    # A failed record of seed 1 written after its ok one does not hide the ok one; a torn last
    # line (a killed old-style writer) and garbage are passed over by the lookup.
    (path,) = out.rglob("*.jsonl")
    failed = {**json.loads(path.read_text().splitlines()[1]), "status": "failed"}
    with open(path, "a") as handle:
        handle.write(json.dumps(failed) + "\n" + '{"schema": 1, "cell": "to')
    assert len(ok_records(path.parent)) == 2
    assert len(read_records([path])) == 3
    assert "torn last line" in capsys.readouterr().err
    second = run((0, 1, 2), resume=True)
    assert len(counted(counts)) == 3, "only seed 2 ran"
    assert [r["seed"] for r in second] == [0, 1, 2]
    assert [r["started"] for r in second[:2]] == [r["started"] for r in first]
    # the first two are the ok records read back from the file, the third a new one
    assert [getattr(r, "file", None) for r in second] == [str(path), str(path), None]
    # Another configuration (a different T) is another cell: all of it runs.
    changed = resolve(
        Registry(make_plugin_manager(select=[])).get_task_path("toy"),
        name="toy",
        preset="quick",
        overrides=["dynamics.T=31", "dynamics.K=5"],
    )
    run((0, 1), resume=True, cells=changed)
    assert len(counted(counts)) == 5
    # A bad line that is not the torn last one is still an error for readers.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": 1, "cell": "to\n{"schema": 1}\n')
    with pytest.raises(ResultsError, match=r"bad\.jsonl:1: expected one JSON record per line"):
        read_records([bad])


def test_executor_options_give_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    base = ["run", "toy", "--preset", "quick", "--backend", "torch"]
    cases = {
        ("--scheduler", "tcp://127.0.0.1:1"): "--scheduler: expected --executor dask",
        ("--jobs", "0"): "--jobs: expected an integer ≥ 1, found 0",
        ("--retries", "-1"): "--retries: expected an integer ≥ 0, found -1",
        ("--executor", "inline", "--jobs", "2"): "--jobs: expected 1 with --executor inline",
    }
    for extra, message in cases.items():
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("epbench: error: ") and message in err[0]
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(EpbenchError, match=r"pip install 'epbench\[dask\]'"):
        make_executor("dask")
