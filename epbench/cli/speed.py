"""The `compare` and `profile` subcommands, wired into `epbench.cli.commands` like `figures_cli`:

add_commands(subparsers)      adds the two subcommands to the `epbench` parser
run_command(args)             runs one of them (returns its exit code), or returns None when
                              `args.command` is another command

epbench compare OLD NEW [--threshold 0.10] [--memory]
    speed records of two runs (files or folders) side by side: samples/s, NEW/OLD ratios;
    exit 1 when a case got slower by more than the threshold (or was lost; or, with
    --memory, needs more memory), else 0 (epbench.views.compare)
epbench profile TASK… [--backend NAME] [--algorithm ep|ep_symmetric|bptt|all] [--steps N]
    where the time of a training step goes: cProfile (`.prof` and a text summary) and the
    backend's own profiler (torch: per-op table; jax: a trace), written under OUT/profiles/
    (epbench.measurements.speed.profile_steps)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from epbench.core.errors import EpbenchError
from epbench.core.flops import ALGORITHMS
from epbench.core.records import read_records
from epbench.views.compare import THRESHOLD, compare_speed, compare_table, regressions

COMMANDS = ("compare", "profile")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `compare` and `profile` to the `epbench` subparsers (dest "command")."""
    from epbench.cli.commands import (
        _cell_arguments,  # lazy: epbench.cli.commands imports this module
    )

    compare = subparsers.add_parser(
        "compare", help="speed records of two runs side by side; exit 1 on a regression"
    )
    compare.add_argument("old", type=Path, metavar="OLD", help="results file or folder (before)")
    compare.add_argument("new", type=Path, metavar="NEW", help="results file or folder (after)")
    compare.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"flag a case slower by more than this fraction (default {THRESHOLD})",
    )
    compare.add_argument(
        "--memory", action="store_true", help="also flag cases whose peak memory grew as much"
    )
    profile = subparsers.add_parser(
        "profile", help="profile training steps of task cells (cProfile + the backend's profiler)"
    )
    _cell_arguments(profile, backend_help="NAME[,NAME…] (default: every installed one)")
    profile.add_argument(
        "--algorithm", choices=(*ALGORITHMS, "all"), default="all", help="which training step"
    )
    profile.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")


def cmd_compare(args: argparse.Namespace) -> int:
    rows = compare_speed(
        read_records([args.old]),
        read_records([args.new]),
        threshold=args.threshold,
        memory=args.memory,
    )
    print(compare_table(rows))
    bad = regressions(rows)
    if bad:
        print(
            f"\n{len(bad)} of {len(rows)} cases regressed (threshold {args.threshold:.0%})",
            file=sys.stderr,
        )
        return 1
    print(f"\nno regression (threshold {args.threshold:.0%})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from epbench.cli.commands import select_backends, select_cells
    from epbench.measurements.speed import profile_steps
    from epbench.plugins.registry import Registry
    from epbench.run.matrix import load_batch

    if args.steps < 1:
        raise EpbenchError(f"--steps: expected an integer ≥ 1, found {args.steps}")
    registry = Registry()
    cells = select_cells(registry, args)
    backends = select_backends(registry, args.backend)
    algorithms = ALGORITHMS if args.algorithm == "all" else (args.algorithm,)
    folder = args.out / "profiles"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        message = f"--out: expected a writable folder, found {folder}: {err.strerror}"
        raise EpbenchError(message) from None
    for spec in cells:
        dtype = args.dtype or spec.dtype
        batch = load_batch(spec, seed=args.seed, dtype=dtype, data_dir=args.data_dir)
        for backend in backends:
            reason = backend.supports(spec.model, dtype=dtype, device=args.device)
            if reason:
                print(f"{spec.cell} on {backend.name}: skipped: {reason}\n")
                continue
            for algorithm in algorithms:
                out = profile_steps(
                    spec,
                    backend,
                    batch,
                    algorithm=algorithm,
                    steps=args.steps,
                    dtype=dtype,
                    device=args.device,
                    seed=args.seed,
                    folder=folder,
                )
                lines = out["cprofile_summary"].strip().splitlines()
                print(
                    f"{spec.cell} · {backend.name} · {args.device} · {algorithm}: "
                    f"{out['seconds_per_step'] * 1e3:,.2f} ms per step under cProfile "
                    f"({out['cprofile']})"
                )
                print("\n".join(lines[:25]))
                if out["backend_summary"]:
                    print(f"\n{backend.name} profiler:\n{out['backend_summary']}")
                print()
    return 0


def run_command(args: argparse.Namespace) -> int | None:
    """Run `compare` or `profile`; None when `args.command` is not one of them."""
    if getattr(args, "command", None) == "compare":
        return cmd_compare(args)
    if getattr(args, "command", None) == "profile":
        return cmd_profile(args)
    return None
