"""Bad input everywhere gets one line (issue 21, and the misspellings and absurd values of 22).

Every case goes through the command line (`epbench.cli.main`, in this process) and asserts: exit
code 2 (or, for a bad record among good ones, exit 0 with the problem printed), one line on
stderr, no traceback, and that the records written before are intact (the folder's files are
byte for byte what they were). Nearly every case fails before any cell runs; the records, saved
traces and checkpoints the readers get are built once per module from one toy cell (T = 20).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from epbench.cli import main
from epbench.core.checkpoint import load_checkpoint, save_checkpoint
from epbench.core.errors import EpbenchError, ResultsError
from epbench.core.paths import output_path

TOY = ("toy", "--backend", "torch", "--set", "dynamics.T=20", "--set", "dynamics.K=10")
GOOD_TASK = """\
measure = ["gdu"]
[model]
setting = "EB"
inputs = 5
sizes = [10, 8]
input_to = [0, 1]
activation = "tanh"
epsilon = 0.08
[dynamics]
T = 20
K = 10
beta = 0.01
[data]
source = "toy"
[presets.quick]
dynamics = { T = 10, K = 5 }
"""
SPEED = {
    "schema": 2,
    "status": "ok",
    "measurement": "speed",
    "cell": "speed[model=P-1h]",
    "backend": "torch",
    "device": "cpu",
    "dtype": "float32",
    "config_hash": "abc",
    "metrics": {"speed": {"ep": {"step_seconds": 0.01, "samples_per_s": 2000.0}}},
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (relative path → content)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder with one toy GDU record and its saved traces, written once."""
    out = tmp_path_factory.mktemp("made") / "results"
    assert (
        main(["run", *TOY, "--out", str(out), "--save-traces", "--executor", "inline", "--quiet"])
        == 0
    )
    return out


@pytest.fixture
def results(made: Path, tmp_path: Path) -> Path:
    """A copy of the module's results folder, for one test to spoil."""
    copy = tmp_path / "results"
    shutil.copytree(made, copy)
    return copy


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """cli(*args) → (exit code, stdout, stderr) of `epbench ARGS…`."""

    def run(*args: object) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def refused(cli: Callable[..., tuple[int, str, str]], *args: object, needles=()) -> str:
    """Run `epbench ARGS…`: exit 2, one `epbench: error:` line holding `needles`, no traceback."""
    code, _, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("epbench: error: "), err
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


def records_file(folder: Path) -> Path:
    return next(folder.rglob("*.jsonl"))


def record_of(folder: Path) -> dict:
    return json.loads(records_file(folder).read_text().splitlines()[0])


# --- run: values and misspellings, refused before any cell runs --------------------------------


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (("--set", "dynamcs.T=5"), ["dynamcs", "did you mean 'dynamics'"]),
        (("--set", "foo.bar=5"), ["foo", "expected one of"]),
        (("--set", "dynamics.Kk=5"), ["dynamics.Kk", "did you mean 'K'"]),
        (("--set", "modle.sizes=[10,4]"), ["did you mean 'model'"]),
        (("--set", "model.conv.kernal=3"), ["model.conv.kernal", "did you mean 'kernel'"]),
        (("--set", "dynamics.beta=nan"), ["dynamics.beta", "finite", "nan"]),
        (("--set", "dynamics.beta=inf"), ["dynamics.beta", "finite", "inf"]),
        (("--set", "model.epsilon=-inf"), ["model.epsilon", "finite"]),
        (("--set", "dynamics.T=1000000000000"), ["dynamics.T", "1000000", "limit"]),
        (("--set", "model.sizes=[10,100000000]"), ["model.sizes", "100000"]),
        (("--set", "train.epochs=100000000"), ["train.epochs", "10000"]),
        (("--set", "data.batch=10000000000"), ["data.batch", "1000000"]),
        (("--set", "dynamics.T"), ["key=value"]),
        (("--set", "dynamics.points=0"), ["dynamics.points", "N ≥ 2", "0"]),
        (("--set", "dynamics.points=1"), ["dynamics.points", "N ≥ 2", "1"]),
        (("--set", "dynamics.points=2.5"), ["dynamics.points", "N ≥ 2", "2.5"]),
        (("--sweep", "dynamics.points=2,1"), ["dynamics.points", "N ≥ 2"]),
        (("--set", "dynamics.estimator=holo"), ["dynamics.estimator", "holomorphic"]),
        (("--set", 'train.algorithms=["adam"]'), ["train.algorithms", "ep, bptt", "adam"]),
        (("--set", "train.algorithms=[]"), ["train.algorithms", "non-empty"]),
        (("--seed", "-1"), ["--seed", "-1"]),
        (("--seeds", "0,-1"), ["--seeds"]),
        (("--sweep", "dynamics.T=20,a/b"), ["--sweep", "'a/b'"]),
        (("--sweep", "dynamcs.T=20,40"), ["did you mean 'dynamics'"]),
        (("--backend", "nope"), ["nope"]),
        (("--preset", "fast"), ["preset", "fast"]),
        (("--device", "tpu"), ["--device", "tpu"]),
    ],
)
def test_run_refuses_bad_values(cli, results: Path, extra: tuple, needles: list) -> None:
    before = snapshot(results)
    refused(cli, "run", *TOY, *extra, "--out", results, "--executor", "inline", needles=needles)
    assert snapshot(results) == before


@pytest.mark.parametrize(
    ("task", "needles"),
    [
        ("nope", ["nope", "toy"]),
        ("toy[width=x]", ["width"]),
        ("missing.toml", ["missing.toml", "found nothing"]),
    ],
)
def test_run_refuses_unknown_tasks(cli, results: Path, task: str, needles: list) -> None:
    before = snapshot(results)
    refused(cli, "run", task, "--backend", "torch", "--out", results, needles=needles)
    assert snapshot(results) == before


def test_out_naming_a_file_is_one_line(cli, tmp_path: Path, made: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("kept\n")
    for command in (("run", *TOY), ("profile", *TOY), ("report", made), ("plot", made)):
        refused(cli, *command, "--out", file, needles=["--out", "expected a folder"])
    assert file.read_text() == "kept\n"


def test_parity_refuses(cli, results: Path) -> None:
    before = snapshot(results)
    refused(cli, "parity", *TOY, "--out", results, needles=["two or more backends"])
    refused(cli, "parity", "toy", "--backend", "torch,nope", "--out", results, needles=["nope"])
    refused(
        cli,
        "parity",
        "toy",
        "--backend",
        "torch,jax",
        "--set",
        "dynamics.beta=nan",
        "--out",
        results,
        needles=["finite"],
    )
    assert snapshot(results) == before


# --- task files ------------------------------------------------------------------------------


def _task(tmp_path: Path, text: str | bytes, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD_TASK + "[presets.fast]\nmodle = { sizes = [10, 4] }\n", ["modle", "'model'"]),
        (GOOD_TASK + "[presets.fast]\ndynamics = { T = 9, KK = 2 }\n", ["KK", "'K'"]),
        (GOOD_TASK + "[presets.fast]\nbogus = 1\n", ["presets.fast.bogus"]),
        (GOOD_TASK + "[variants.w.a]\nmodel = { sizes = [10, 4] }\nbogus = 1\n", ["bogus"]),
        (GOOD_TASK + "[variants.w.a]\nmodel = { sizs = [10, 4] }\n", ["'sizes'"]),
        (GOOD_TASK + "[variants.w.a]\npresets.quick = { dynamcs = { T = 9 } }\n", ["dynamcs"]),
        (GOOD_TASK + '[variants."a b".x]\nmodel = { sizes = [10, 4] }\n', ["'a b'"]),
        (GOOD_TASK + "[presets]\nfast = 5\n", ["presets.fast", "a table"]),
        (GOOD_TASK + "dynamcs = { T = 9 }\n", ["'dynamics'"]),
        (GOOD_TASK.replace("T = 20", "T = nan"), ["dynamics.T"]),
        (GOOD_TASK.replace("beta = 0.01", "beta = inf"), ["dynamics.beta", "finite"]),
        (GOOD_TASK.replace('measure = ["gdu"]', 'measure = ["nope"]'), ["measure"]),
        (GOOD_TASK.replace("T = 20", "T = = 1"), ["valid TOML"]),
        (GOOD_TASK + "x = " + "[" * 3000 + "]" * 3000 + "\n", ["nested at most"]),
        ("x = " + "{a = " * 40 + "1" + "}" * 40 + "\n", ["nested at most 16"]),
        (GOOD_TASK.encode() + b'description = "caf\xe9"\n', ["UTF-8", "byte offset"]),
        (GOOD_TASK + "#" * (1 << 20) + "\n", ["at most 1048576 bytes"]),
    ],
)
def test_bad_task_files(cli, tmp_path: Path, text: str | bytes, needles: list) -> None:
    path = _task(tmp_path, text)
    out = tmp_path / "out"
    line = refused(cli, "run", path, "--backend", "torch", "--out", out, needles=needles)
    assert str(path) in line or "t.toml" in line
    assert not out.exists()


def test_variant_name_leaving_out_is_refused(cli, tmp_path: Path) -> None:
    """`[variants.model."x/../../y"]`: refused at load; nothing appears outside --out."""
    parent = tmp_path / "parent"
    out = parent / "a" / "out"
    out.mkdir(parents=True)
    path = _task(parent, GOOD_TASK + '[variants.model."x/../../y"]\nmodel = { sizes = [10, 4] }\n')
    before = sorted(p.relative_to(parent) for p in parent.rglob("*"))
    line = refused(
        cli, "run", path, "--backend", "torch", "--out", out, "--save-traces", needles=["x/../../y"]
    )
    assert "variant name" in line
    assert sorted(p.relative_to(parent) for p in parent.rglob("*")) == before


def test_task_name_must_be_a_safe_name(cli, tmp_path: Path) -> None:
    path = _task(tmp_path, GOOD_TASK, name="my task.toml")
    refused(cli, "run", path, "--backend", "torch", "--out", tmp_path / "o", needles=["my task"])


# --- data files ------------------------------------------------------------------------------


def test_truncated_idx_file(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncated MNIST files in --data-dir: the checksum check refuses them, one line."""
    monkeypatch.setenv("EPBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (folder / f"{name}.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(100))  # cut short
    out = tmp_path / "out"
    args = ("mnist-fc[model=P-1h]", "--backend", "torch", "--set", "dynamics.T=20")
    refused(
        cli,
        "run",
        *args,
        "--data-dir",
        tmp_path / "data",
        "--out",
        out,
        "--executor",
        "inline",
        needles=["idx", "expected"],
    )
    refused(cli, "run", *args, "--data-dir", tmp_path / "none", needles=["data folder"])


# --- result files: one bad record among good ones ----------------------------------------------


BAD_RECORDS = {
    "schema as a string": '{"schema": "2", "status": "ok"}',
    "an empty object": "{}",
    "only a cell name": '{"cell": "toy"}',
    "deep nesting": '{"schema": 2, "status": "ok", "metrics": '
    + '{"a": ' * 5000
    + "1"
    + "}" * 5001,
    "metrics null": '{"schema": 2, "status": "ok", "metrics": null}',
    "metrics a list": '{"schema": 2, "status": "ok", "metrics": [1, 2]}',
    "gdu payload malformed": '{"schema": 2, "status": "ok", "measurement": "gdu", "cell": "x", '
    '"metrics": {"gdu": {"W0_1": "x"}, "residual": "abc"}}',
    "gdu timings malformed": '{"schema": 2, "status": "ok", "measurement": "gdu", "cell": "x", '
    '"metrics": {"residual": 1.0, "gdu": []}, "timings": {"steady_seconds": "x"}}',
    "speed string": json.dumps(
        {**SPEED, "metrics": {"speed": {"ep": {"step_seconds": "fast", "samples_per_s": "x"}}}}
    ),
    "a JSON array": "[1, 2, 3]",
}


@pytest.mark.parametrize("bad", list(BAD_RECORDS))
def test_table_skips_a_bad_record(cli, results: Path, bad: str) -> None:
    (results / "bad.jsonl").write_text(BAD_RECORDS[bad] + "\n")
    before = snapshot(results)
    code, out, err = cli("table", results)
    assert code == 0, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl:1:" in lines[0], err
    assert "| toy " in out  # the good record is still tabulated
    assert snapshot(results) == before


def test_table_on_a_binary_file(cli, results: Path) -> None:
    (results / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    code, out, err = cli("table", results)
    assert code == 0 and "binary.jsonl" in err and len(err.strip().splitlines()) == 1
    assert "| toy " in out


@pytest.mark.parametrize("bad", ["an empty object", "gdu payload malformed", "speed string"])
def test_nothing_usable_is_exit_2(cli, tmp_path: Path, bad: str) -> None:
    (tmp_path / "only.jsonl").write_text(BAD_RECORDS[bad] + "\n")
    for command in ("table", "plot", "report"):
        extra = ("--out", tmp_path / "o") if command != "table" else ()
        refused(cli, command, tmp_path / "only.jsonl", *extra, needles=["only.jsonl:1"])


def test_missing_results(cli, tmp_path: Path) -> None:
    refused(cli, "table", tmp_path / "nope", needles=["nope"])
    refused(cli, "compare", tmp_path / "nope", tmp_path / "nope2", needles=["nope"])


def test_report_and_plot_skip_a_bad_record(cli, results: Path, tmp_path: Path) -> None:
    (results / "bad.jsonl").write_text(BAD_RECORDS["gdu payload malformed"] + "\n")
    before = snapshot(results)
    for command in ("report", "plot"):
        code, _, err = cli(command, results, "--out", tmp_path / command)
        assert code == 0 and "Traceback" not in err, err
        problems = [line for line in err.splitlines() if "bad.jsonl:1:" in line]
        assert len(problems) == 1, err
    assert (tmp_path / "report" / "report.md").is_file()
    assert snapshot(results) == before


def test_compare_skips_a_bad_speed_record(cli, tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text(json.dumps(SPEED) + "\n")
    new.write_text(json.dumps(SPEED) + "\n" + BAD_RECORDS["speed string"] + "\n")
    code, out, err = cli("compare", old, new)
    assert code == 0 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "new.jsonl:2" in err
    assert "same" in out
    refused(cli, "compare", new, old, "--threshold", "nan", needles=["--threshold"])
    refused(cli, "compare", tmp_path / "bad-only", old, needles=["bad-only"])


# --- saved traces ----------------------------------------------------------------------------


def _traces(results: Path) -> Path:
    return next(results.rglob("*.npz"))


def _header_only(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """An .npy file whose header claims `shape` and whose data is absent."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _spoil_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _spoil_object(path: Path) -> None:
    np.savez(path, **{"ep/W0_1": np.array([{"pickled": 1}], dtype=object)})


def _spoil_absurd(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ep/W0_1.npy", _header_only((10**6, 10**6)))


def _spoil_short(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ep/W0_1.npy", _header_only((10, 10, 8)) + bytes(80))


def _spoil_steps(path: Path) -> None:
    with np.load(path) as archive:
        arrays = {
            k: archive[k][:3] if k.startswith(("ep/", "bptt/")) else archive[k]
            for k in archive.files
        }
    np.savez(path, **arrays)


def _spoil_names(path: Path) -> None:
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "bptt/W0_1"}
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("spoil", "needles"),
    [
        (_spoil_truncated, ["truncated"]),
        (_spoil_object, ["object"]),
        (_spoil_absurd, ["absurd shape"]),
        (_spoil_short, ["cut short"]),
        (_spoil_steps, ["K = 10"]),
        (_spoil_names, ["same names"]),
    ],
)
def test_bad_saved_traces(cli, results: Path, tmp_path: Path, spoil, needles: list) -> None:
    spoil(_traces(results))
    before = snapshot(results)
    refused(cli, "plot", results, "--out", tmp_path / "figures", needles=[".npz", *needles])
    assert snapshot(results) == before


def test_truncated_traces_in_a_report(cli, results: Path, tmp_path: Path) -> None:
    _spoil_truncated(_traces(results))
    refused(cli, "report", results, "--out", tmp_path / "page", needles=["truncated"])


@pytest.mark.parametrize("where", ["/etc/passwd", "../../outside.npz", "a/../../b.npz"])
def test_traces_path_must_stay_below_the_results(cli, results: Path, tmp_path: Path, where: str):
    file = records_file(results)
    record = record_of(results)
    file.write_text(json.dumps({**record, "traces": where}) + "\n")
    refused(cli, "plot", results, "--out", tmp_path / "f", needles=["traces", "below the results"])


# --- checkpoints (the reader `--resume` uses) ---------------------------------------------------


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "c.npz"
    params = {"W0_1": np.zeros((10, 8)), "b0": np.zeros(10)}
    save_checkpoint(path, params=params, curves={"loss": [1.0]}, meta={"epoch": 1})
    return path


@pytest.mark.parametrize(
    ("spoil", "needles"),
    [
        (_spoil_truncated, ["truncated"]),
        (lambda p: p.write_bytes(b""), ["unreadable"]),
        (_spoil_object, ["object"]),
        (_spoil_absurd, ["absurd shape"]),
    ],
)
def test_bad_checkpoints(tmp_path: Path, spoil, needles: list) -> None:
    path = _checkpoint(tmp_path)
    spoil(path)
    with pytest.raises(ResultsError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    for needle in needles:
        assert needle in text


def test_checkpoint_shapes_against_the_configuration(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    assert load_checkpoint(path, shapes={"W0_1": (10, 8), "b0": (10,)}) is not None
    with pytest.raises(ResultsError, match="shapes of the configuration"):
        load_checkpoint(path, shapes={"W0_1": (10, 9), "b0": (10,)})


def test_output_paths_stay_below_their_root(tmp_path: Path) -> None:
    assert output_path(tmp_path, "a", "b.npz") == tmp_path / "a" / "b.npz"
    for parts in (("..", "x"), ("/etc/passwd",), ("a/../../x",)):
        with pytest.raises(EpbenchError, match="below this folder"):
            output_path(tmp_path, *parts)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(EpbenchError, match="below this folder"):
        output_path(tmp_path, "link", "x")


def test_through_the_real_entry_point(tmp_path: Path) -> None:
    """The same one line from `python -m epbench` in a subprocess (the script users run)."""
    (tmp_path / "deep.jsonl").write_text(BAD_RECORDS["deep nesting"] + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "epbench", "table", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and "nested at most" in lines[0]


def test_pivot_and_detail_skip_a_bad_record(cli, results: Path) -> None:
    (results / "bad.jsonl").write_text(BAD_RECORDS["gdu payload malformed"] + "\n")
    code, out, err = cli("table", results, "--pivot", "backend", "--metric", "rmse")
    assert code == 0 and "Traceback" not in err and "torch" in out, err
    code, out, err = cli("table", results, "--detail")
    assert code == 0 and "Traceback" not in err and "| toy " in out, err
    assert len([line for line in err.splitlines() if "bad.jsonl:1:" in line]) == 1
