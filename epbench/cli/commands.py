"""`epbench …` — the command line.

    epbench backends                     installed backends, their versions
    epbench tasks                        task files, their cells and presets
    epbench run TASK… [options]          run cells, print tables, append JSONL records
    epbench parity TASK… --backend a,b   the same cells on several backends, differences
    epbench table RESULTS… [--against paper]   tables from records (files or folders)
    epbench table RESULTS… --pivot KEY [--metric M]   one metric, the values of KEY as columns
    epbench plot RESULTS… [--out DIR]    figures (needs the `plot` extra: matplotlib)
    epbench report RESULTS… --out DIR   one Markdown + HTML page with tables and figures
    epbench compare OLD NEW              speed records before/after; exit 1 on a regression
    epbench profile TASK… [--algorithm]  where a training step's time goes (cProfile, profiler)

Bad input (unknown names, invalid task files, malformed data) prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from epbench.cli.figures import add_commands, run_command
from epbench.cli.speed import add_commands as add_speed_commands
from epbench.cli.speed import run_command as run_speed_command
from epbench.config.tasks import (
    DEFAULT_PRESET,
    parse_selector,
    preset_names,
    read_task_file,
    resolve,
)
from epbench.config.tasks import variant_names as _variants
from epbench.core.errors import EpbenchError
from epbench.core.records import RecordWriter, read_records
from epbench.core.spec import DTYPES
from epbench.measurements.parity import run_parity
from epbench.plugins.registry import Registry
from epbench.run.executors import EXECUTORS, make_executor
from epbench.run.matrix import RunOptions, run_matrix
from epbench.views.pivot import METRICS as PIVOT_METRICS
from epbench.views.pivot import pivot_table
from epbench.views.tables import AGAINST, format_record, overview, parity_table


def _cell_arguments(parser: argparse.ArgumentParser, *, backend_help: str) -> None:
    """Arguments shared by the commands that resolve task cells and run them on backends."""
    parser.add_argument(
        "tasks",
        nargs="+",
        metavar="TASK",
        help="task name, NAME[axis=value], or a path to a task file (.toml)",
    )
    parser.add_argument("--backend", default="", help=backend_help)
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="preset of the task files")
    parser.add_argument("--dtype", choices=DTYPES, help="override the task's dtype")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a task field, e.g. dynamics.T=100 (repeatable)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2…",
        help="run every cell once per value, as a variant axis named after the key's last part, "
        "e.g. dynamics.estimator=positive,symmetric (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--data-dir", type=Path, help="folder holding the dataset files")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list installed backends")
    sub.add_parser("tasks", help="list tasks, their cells and presets")
    run = sub.add_parser("run", help="run task cells on backends and record the results")
    _cell_arguments(run, backend_help="NAME[,NAME…] (default: every installed one)")
    run.add_argument(
        "--save-traces",
        action="store_true",
        help="write params, batch and traces of each cell to an .npz",
    )
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="steady-state timing repetitions after the first run (default 1)",
    )
    run.add_argument(
        "--seeds",
        metavar="N,N…",
        help="run every cell once per seed, e.g. 0,1,2 (replaces --seed)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip cells with an ok record in --out (same config, backend, seed, preset); "
        "training cells continue from their last epoch checkpoint",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="print only the summary table (no progress bar or lines)",
    )
    run.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where cells run: local worker subprocesses (default), a Dask cluster, or inline "
        "in this process (no isolation)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="cells at once: local workers, or the workers of a Dask LocalCluster (default 1)",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster)",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="run a failed cell (backend error, worker died) up to N more times (default 0)",
    )
    parity = sub.add_parser(
        "parity", help="compare backends on the same cells, parameters and batch"
    )
    _cell_arguments(parity, backend_help="REFERENCE,OTHER[,…] (default: every installed one)")
    parity.add_argument(
        "--tolerance",
        type=float,
        help="exit 1 above this relative difference (default 1e-10 float64, 1e-4 float32)",
    )
    table = sub.add_parser("table", help="print tables from result files or folders")
    table.add_argument("results", nargs="+", type=Path)
    table.add_argument("--detail", action="store_true", help="per-layer table of each record")
    table.add_argument(
        "--against",
        choices=AGAINST,
        help="training records beside the paper's reported errors (PAPER.md §5, Table 1)",
    )
    table.add_argument(
        "--pivot",
        metavar="KEY",
        help="one table with the values of KEY as columns: a record field (depth, estimator, "
        "angle, backend), a variant axis, or a config path (dynamics.estimator)",
    )
    table.add_argument(
        "--metric",
        default="cosine",
        metavar="NAME",
        help=f"what --pivot shows: {', '.join(PIVOT_METRICS)}, or a dotted path into the "
        "records (metrics.gdu.W0_1.rmse); default cosine",
    )
    add_commands(sub)
    add_speed_commands(sub)
    return parser


def cmd_backends(registry: Registry) -> int:
    rows = []
    for name, backend in registry.get_backends().items():
        versions = ", ".join(f"{k} {v}" for k, v in backend.versions().items())
        rows.append([name, versions, type(backend).__module__])
    print(
        tabulate(rows, headers=["backend", "versions", "module"], tablefmt="github")
        if rows
        else "no backends installed (pip install backends/epbench-torch)"
    )
    return 0


def cmd_tasks(registry: Registry) -> int:
    rows = []
    for name, path in registry.get_task_paths().items():
        raw = read_task_file(path)
        cells = ", ".join(
            name + ("[" + ",".join(f"{a}={v}" for a, v in var) + "]" if var else "")
            for var in _variants(raw, str(path))
        )
        rows.append([name, cells, ", ".join(preset_names(raw)), raw.get("description", "")])
    print(
        tabulate(
            rows,
            headers=["task", "cells", "presets", "description"],
            tablefmt="github",
            maxcolwidths=[None, 50, None, 60],
        )
    )
    return 0


def select_cells(registry: Registry, args: argparse.Namespace) -> list:
    cells = []
    for text in args.tasks:
        path = Path(text)
        if text.endswith(".toml"):
            if not path.is_file():
                raise EpbenchError(
                    f"task file {text}: expected a readable TOML file, found nothing"
                )
            cells += resolve(
                path, preset=args.preset, overrides=args.set, sweeps=getattr(args, "sweep", ())
            )
            continue
        name, selection = parse_selector(text)
        cells += resolve(
            registry.get_task_path(name),
            name=name,
            selection=selection,
            preset=args.preset,
            overrides=args.set,
            sweeps=getattr(args, "sweep", ()),
        )
    return cells


def select_backends(registry: Registry, text: str) -> list:
    names = [n.strip() for n in text.split(",") if n.strip()]
    backends = (
        [registry.get_backend(n) for n in names]
        if names
        else list(registry.get_backends().values())
    )
    if not backends:
        raise EpbenchError(
            "no backend installed: expected at least one (pip install an epbench "
            "backend such as backends/epbench-torch), found none"
        )
    return backends


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """`"0,1,2"` → (0, 1, 2); None → (); anything else is a one-line EpbenchError."""
    if text is None:
        return ()
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise EpbenchError(
            f"--seeds: expected distinct non-negative integers separated by commas, found {text!r}"
        )
    return seeds


def cmd_run(registry: Registry, args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    cells = select_cells(registry, args)
    backends = select_backends(registry, args.backend)
    if args.repeat < 0:
        raise EpbenchError(f"--repeat: expected an integer ≥ 0, found {args.repeat}")
    options = RunOptions(
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        seeds=seeds,
        data_dir=args.data_dir,
        save_traces=args.save_traces,
        repeat=args.repeat,
        resume=args.resume,
        quiet=args.quiet,
    )
    writer = RecordWriter(args.out)

    def show(record: dict) -> None:
        if not args.quiet:
            print(format_record(record) + "\n", flush=True)

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if args.retries < 0:
        raise EpbenchError(f"--retries: expected an integer ≥ 0, found {args.retries}")
    executor = make_executor(args.executor, jobs=args.jobs, scheduler=args.scheduler)
    try:
        records = run_matrix(
            cells,
            backends,
            options=options,
            writer=writer,
            executor=executor,
            retries=args.retries,
            on_record=show,
            progress=progress,
        )
    finally:
        executor.close()
    print(overview(records))
    written = writer.path.exists()
    print(f"\nrecords appended to {writer.path}" if written else "\nno new records")
    return 1 if any(r["status"] in ("failed", "diverged") for r in records) else 0


def cmd_parity(registry: Registry, args: argparse.Namespace) -> int:
    cells = select_cells(registry, args)
    backends = select_backends(registry, args.backend)
    if len(backends) < 2:
        raise EpbenchError(
            f"--backend: expected two or more backends to compare, found "
            f"{[b.name for b in backends]}"
        )
    writer = RecordWriter(args.out)
    records = run_parity(
        cells,
        backends,
        dtype=args.dtype,
        device=args.device,
        seed=args.seed,
        data_dir=args.data_dir,
        writer=writer,
        tolerance=args.tolerance,
    )
    print(parity_table(records))
    print(f"\nrecords appended to {writer.path}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cmd_table(args: argparse.Namespace) -> int:
    records = read_records(args.results)
    if args.detail:
        for record in records:
            print(format_record(record) + "\n")
    if args.pivot:
        print(pivot_table(records, key=args.pivot, metric=args.metric))
        return 0
    print(overview(records, against=args.against))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if (code := run_command(args)) is not None:
            return code
        if (code := run_speed_command(args)) is not None:
            return code
        if args.command == "table":
            return cmd_table(args)
        registry = Registry()
        if args.command == "backends":
            return cmd_backends(registry)
        if args.command == "tasks":
            return cmd_tasks(registry)
        if args.command == "parity":
            return cmd_parity(registry, args)
        return cmd_run(registry, args)
    except EpbenchError as err:
        print(f"epbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("epbench: interrupted; records written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
