"""Figures and the report page (epbench.views.plots, epbench.views.report, epbench.cli.figures),
drawn from real
runs: `epbench run toy … --save-traces` plus a tiny task with a β sweep and a depth sweep, and (with
MNIST) a short two-seed training run. Without matplotlib the plot tests skip; the test of the
install hint blocks matplotlib in a subprocess and runs whether matplotlib is installed or not."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from epbench.core.record import read_records
from epbench.core.traces import load_traces
from epbench.plugins.registry import Registry

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(
    not HAS_MATPLOTLIB, reason="matplotlib (the epbench[plot] extra) is not installed"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Three cells of one task on the axis `case`: a and b differ only in β (a β curve), a/b and c in
# depth (a depth curve). T is long enough for the free phase to settle (residual ≲ 1e-11).
SWEEP = """
description = "tiny EB net: two values of beta, two depths"
[model]
setting = "EB"
inputs = 5
sizes = [10, 8]
activation = "tanh"
epsilon = 0.2
[dynamics]
T = 400
K = 10
beta = 0.01
[data]
source = "toy"
[presets.quick]
[variants.case.a]
dynamics = { beta = 0.04 }
[variants.case.b]
dynamics = { beta = 0.01 }
[variants.case.c]
model = { sizes = [10, 8, 8] }
"""

TRAIN = """
description = "two epochs of a tiny P net on 200 MNIST images"
measure = ["train"]
dtype = "float32"
[model]
setting = "P"
inputs = 784
sizes = [10, 16]
activation = "sigm"
[dynamics]
T = 10
K = 4
beta = 0.5
[data]
source = "mnist"
batch = 20
subset = 200
[train]
epochs = 2
lrs = [0.05, 0.1]
test_batch = 1000
"""

BLOCK_MATPLOTLIB = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Block())
import epbench.cli, epbench.cli.figures, epbench.views.plots, epbench.views.report
assert "matplotlib" not in sys.modules
sys.exit(epbench.cli.main(sys.argv[1:]))
"""


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m epbench ARGS` (or `python -c CODE ARGS`) with only the torch plugin loaded."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "epbench"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "EPBENCH_LOAD_PLUGINS": "torch"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder from a real run: toy and the three sweep cells, traces saved."""
    if "torch" not in Registry().get_backends():
        pytest.skip("the torch backend is not installed")
    root = tmp_path_factory.mktemp("gdu")
    task = root / "sweep.toml"
    task.write_text(SWEEP)
    out = root / "results"
    args = ["toy", str(task), "--preset", "quick", "--backend", "torch", "--save-traces"]
    proc = run("run", *args, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def check_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), (path, image.shape)
    assert image.shape[0] > 100 and image.shape[1] > 100, (path, image.shape)
    assert image.std() > 0.01, f"{path} is blank"


@needs_matplotlib
def test_plot_writes_every_figure_the_records_support(results: Path, tmp_path: Path) -> None:
    from epbench.cli import main

    out = tmp_path / "figures"
    assert main(["plot", str(results), "--out", str(out)]) == 0
    cells = ["toy", "sweep-case=a", "sweep-case=b", "sweep-case=c"]
    expected = {f"gdu-curves_{cell}_torch_float64_seed0.png" for cell in cells} | {
        "gdu-bars.png",
        "gdu-times.png",
        "beta-curves.png",
        "depth-curves.png",
    }
    assert {p.name for p in out.iterdir()} == expected
    for path in out.iterdir():
        check_png(path)


@needs_matplotlib
def test_gdu_curves_draw_ep_over_bptt_for_the_largest_components(results: Path) -> None:
    from epbench.views.plots import EP_ZORDER, gdu_curves, traces_path

    records = {r.cell: r for r in read_records([results])}
    for cell, layers in (("toy", 2), ("sweep[case=c]", 3)):
        record = records[cell]
        traces = load_traces(traces_path(record))
        fig = gdu_curves(record, traces, components=3)
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == 2 * layers  # neurons and parameters of each layer
        for ax in panels:
            ep = [line for line in ax.lines if line.get_gid() == "ep"]
            bptt = [line for line in ax.lines if line.get_gid() == "bptt"]
            assert len(ep) == len(bptt) == 3, ax.get_title()
            assert min(line.get_zorder() for line in ep) == EP_ZORDER
            assert min(line.get_zorder() for line in ep) > max(line.get_zorder() for line in bptt)
            for e, b in zip(ep, bptt, strict=True):
                assert e.get_color() != b.get_color() and e.get_linestyle() == "--"
                name, index = re.fullmatch(r"ΔEP (\w+)\[([\d, ]+)\]", e.get_label()).groups()
                index = tuple(int(i) for i in index.split(","))
                assert b.get_label() == f"−∇BPTT {name}[{', '.join(map(str, index))}]"
                np.testing.assert_array_equal(e.get_ydata(), traces["ep"][name][(..., *index)])
                np.testing.assert_array_equal(b.get_ydata(), -traces["bptt"][name][(..., *index)])
            # each name's drawn components are its largest |Σ_t ∇BPTT(t)|, names taken in turn
            drawn: dict[str, list[float]] = {}
            for line in bptt:
                name = re.match(r"−∇BPTT (\w+)", line.get_label()).group(1)
                drawn.setdefault(name, []).append(abs(line.get_ydata().sum()))
            title_names = ax.get_title().split(": ", 1)[1].removeprefix("neurons ").split(", ")
            assert list(drawn) == title_names[: len(drawn)]
            assert max(map(len, drawn.values())) - min(map(len, drawn.values())) <= 1
            for name, values in drawn.items():
                top = np.sort(abs(traces["bptt"][name].sum(0)).ravel())[::-1][: len(values)]
                np.testing.assert_allclose(values, top, rtol=1e-12)


@needs_matplotlib
def test_beta_and_depth_curves_from_the_sweep(results: Path) -> None:
    from epbench.views.plots import beta_curves, fit_slope

    assert fit_slope([1e-3, 1e-2, 1e-1], [3e-6, 3e-4, 3e-2]) == pytest.approx(2.0)
    assert fit_slope([1e-2], [1.0]) is None
    plot = beta_curves(read_records([results]))
    (ax,) = plot.figure.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    slopes = [
        float(m)
        for m in re.findall(
            r"slope (-?[\d.]+)", " ".join(t.get_text() for t in ax.get_legend().get_texts())
        )
    ]
    assert len(slopes) == 6  # W0_1, W1_x, b0, b1, s0, s1 of the 1-hidden-layer cells
    # one-sided nudging: EP's bias is O(β) (docs/theory.md §2), at a settled fixed point
    assert all(0.8 < s < 1.2 for s in slopes), slopes
    assert "sweep[case=a]" in plot.caption and "seeds: 0" in plot.caption
    assert "toy" not in plot.caption  # the caption names only the runs drawn


@needs_matplotlib
def test_depth_curves_from_the_sweep_and_angle_curves_from_documented_records(
    results: Path,
) -> None:
    from epbench.views.plots import figures

    records = read_records([results])
    plots = {p.name: p for p in figures(records)[0]}
    (ax,) = plots["depth-curves"].figure.axes
    by = {r.cell: r for r in records}

    def mean_rmse(cell: str, states: bool) -> float:
        gdu = by[cell].metrics["gdu"]
        return np.mean([m["rmse"] for n, m in gdu.items() if n.startswith("s") == states])

    lines = {c.get_label().rsplit(" · ", 1)[1]: c.lines[0] for c in ax.containers}
    assert set(lines) == {"weights", "neurons"}  # one group: the axis `case` sets the depth
    for kind, states in (("weights", False), ("neurons", True)):
        np.testing.assert_array_equal(lines[kind].get_xdata(), [1, 2])
        depth_1 = np.mean([mean_rmse("sweep[case=a]", states), mean_rmse("sweep[case=b]", states)])
        np.testing.assert_allclose(
            np.asarray(lines[kind].get_ydata(), float),
            [depth_1, mean_rmse("sweep[case=c]", states)],
        )
    # a future angle sweep: α read from the variant (a string) wherever records carry it
    angle = [
        {
            "measurement": "gdu",
            "status": "ok",
            "task": "asym",
            "cell": f"asym[angle={a}]",
            "backend": "torch",
            "dtype": "float64",
            "seed": 0,
            "preset": "quick",
            "variant": {"angle": str(a)},
            "metrics": {"gdu": {"W0_1": {"rmse": a / 90}, "s0": {"rmse": a / 45}}},
        }
        for a in (0, 30, 60)
    ]
    plots = {p.name: p for p in figures(angle)[0]}
    (ax,) = plots["angle-curves"].figure.axes
    weights = next(c for c in ax.containers if c.get_label().endswith("weights"))
    np.testing.assert_allclose(np.asarray(weights.lines[0].get_ydata(), float), [0, 1 / 3, 2 / 3])
    assert "degrees" in ax.get_xlabel() and "depth-curves" not in plots


@needs_matplotlib
def test_report_page_links_resolve_and_images_are_valid(results: Path, tmp_path: Path) -> None:
    from epbench.views.report import write_report

    chosen = [r for r in read_records([results]) if r.cell in ("toy", "sweep[case=c]")]
    written = write_report(chosen, out=tmp_path / "report")
    markdown = written["markdown"].read_text()
    page = written["html"].read_text()
    for text in ("| W0_1", "toy · torch · float64 · seed 0 · preset quick", "python", "commit"):
        assert text in markdown
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == sorted(re.findall(r"!\[(?:\\.|[^\]])*\]\(([^)]+)\)", markdown))
    assert set(images) == {
        "gdu-curves_toy_torch_float64_seed0.png",
        "gdu-curves_sweep-case=c_torch_float64_seed0.png",
        "gdu-bars.png",
        "gdu-times.png",
    }
    for src in images:
        check_png(tmp_path / "report" / src)
    ids = set(re.findall(r' id="([^"]+)"', page))
    targets = re.findall(r'href="#([^"]+)"', page)
    assert {"run-1", "run-2", "env-1", "fig-gdu-bars"} <= set(targets) <= ids
    assert len(targets) == len(re.findall(r"\]\(#", markdown))  # every link made it to HTML
    assert '<a href="#run-2">sweep[case=c] · torch · seed 0</a>' in page
    assert set(re.findall(r"\]\(#([^)]+)\)", markdown)) <= set(
        re.findall(r'<a id="([^"]+)"></a>', markdown)
    )


@needs_matplotlib
def test_learning_curves_memory_and_speed_from_training_records(tmp_path: Path) -> None:
    """Unit test of the training figures on records in the documented format
    (`metrics["train"][algorithm]` with per-epoch lists)."""
    from epbench.views.plots import learning_curves, memory_vs_k, samples_per_second, save

    def record(seed: int, K: int) -> dict:
        rng = np.random.default_rng([seed, K])

        def block(start: float) -> dict:
            curve = start * np.exp(-np.arange(4) / 2) + rng.random(4)
            return {
                "train_error": list(curve),
                "test_error": list(curve + 1),
                "loss": list(curve / 100),
                "epoch_seconds": [1.0] * 4,
                "samples_per_s": 1000.0 + seed,
                "peak_memory_bytes": (40 + K * (2 if start > 11 else 1)) * 2**20,
            }

        return {
            "measurement": "train",
            "status": "ok",
            "task": "tiny",
            "cell": "tiny",
            "backend": "torch",
            "dtype": "float32",
            "preset": "quick",
            "seed": seed,
            "config": {"model": {"sizes": [10, 16]}, "dynamics": {"K": K}},
            "metrics": {"train": {"ep": block(12.0), "bptt": block(10.0)}},
        }

    records = [record(seed, K) for K in (4, 8) for seed in (0, 1, 2)]
    plot = learning_curves(records[:3])
    train_ax, test_ax = plot.figure.axes
    for ax, key in ((train_ax, "train_error"), (test_ax, "test_error")):
        for alg in ("ep", "bptt"):
            (line,) = [line for line in ax.lines if line.get_gid() == alg]
            mean = np.mean([r["metrics"]["train"][alg][key] for r in records[:3]], axis=0)
            np.testing.assert_allclose(line.get_ydata(), mean)
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
        assert len(ax.collections) == 2  # ± std bands of EP and BPTT
    assert "seeds: 0, 1, 2" in plot.caption and "preset: quick" in plot.caption
    memory = memory_vs_k(records)
    (ax,) = memory.figure.axes
    (ep,) = [c for c in ax.containers if c.get_label().endswith("· EP")]
    np.testing.assert_allclose(
        np.asarray(ep.lines[0].get_ydata(), float), [48, 56]
    )  # MiB at K = 4 and 8
    assert memory_vs_k(records[:3]) is None  # one K: no curve
    speed = samples_per_second(records)
    paths = save([plot, memory, speed], tmp_path)
    assert [p.name for p in paths] == [
        "learning-curves.png",
        "memory-vs-K.png",
        "samples-per-s.png",
    ]
    for path in paths:
        check_png(path)


@needs_matplotlib
@pytest.mark.slow
def test_learning_curves_of_a_real_training_run(mnist_available: None, tmp_path: Path) -> None:
    if "torch" not in Registry().get_backends():
        pytest.skip("the torch backend is not installed")
    from epbench.cli import main

    task = tmp_path / "tiny-train.toml"
    task.write_text(TRAIN)
    proc = run("run", str(task), "--backend", "torch", "--seeds", "0,1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    records = read_records([tmp_path])
    assert [r.measurement for r in records] == ["train", "train"]
    out = tmp_path / "figures"
    assert main(["plot", str(tmp_path), "--out", str(out), "--format", "png"]) == 0
    assert {"learning-curves.png", "samples-per-s.png"} <= {p.name for p in out.iterdir()}
    check_png(out / "learning-curves.png")
    from epbench.views.plots import learning_curves

    (train_ax, _) = learning_curves(records).figure.axes
    (ep,) = [line for line in train_ax.lines if line.get_gid() == "ep"]
    mean = np.mean([r.metrics["train"]["ep"]["train_error"] for r in records], axis=0)
    np.testing.assert_allclose(ep.get_ydata(), mean)


@needs_matplotlib
def test_plot_with_nothing_to_draw_exits_2(tmp_path: Path, capsys) -> None:
    from epbench.cli import main

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"schema": 1, "status": "skipped", "cell": "toy"}) + "\n")
    assert main(["plot", str(path), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("epbench: error: ") and "nothing to draw" in err[0]


def test_without_matplotlib_plot_says_how_to_install_and_report_keeps_tables(
    results: Path, tmp_path: Path
) -> None:
    proc = run("plot", str(results), "--out", str(tmp_path / "f"), code=BLOCK_MATPLOTLIB)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epbench: error: "), proc.stderr
    assert "pip install 'epbench[plot]'" in lines[0]
    assert not (tmp_path / "f").exists()
    proc = run("report", str(results), "--out", str(tmp_path / "r"), code=BLOCK_MATPLOTLIB)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'epbench[plot]'" in proc.stderr
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "pip install 'epbench[plot]'" in markdown and "| W0_1" in markdown
    assert not list((tmp_path / "r").glob("*.png"))
