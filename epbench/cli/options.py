"""What the commands share: range-checked parameter types, the cell options, the registry.

Parameter types refuse bad values while the command line is parsed, in the suite's words
(`--jobs: expected an integer ≥ 1, found 0`); `epbench.cli.group` prints the refusal as one line
and exits with 2.

    AtLeast(n)          an integer ≥ n (a `click.IntRange`)
    OneOf(choices)      one of a few names (a `click.Choice`)
    POSITIVE            a finite number > 0
    SEEDS               `0,1,2` → (0, 1, 2): distinct integers ≥ 0
    cell_options(...)   the options of the commands that run task cells (run, parity, profile),
                        gathered into one `CellArgs`
    matrix_options()    those of a matrix run (seeds, --repeat, --resume, --executor, …), one
                        `MatrixArgs`; `run_options` makes the `RunOptions` of both
    registry_of(ctx)    the plugin registry of this invocation (built on first use)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import click

from epbench.config.tasks import DEFAULT_PRESET, select_cells
from epbench.core.errors import EpbenchError
from epbench.core.spec import DTYPES, TaskSpec
from epbench.plugins.registry import Registry
from epbench.run.executors import EXECUTORS
from epbench.run.resolve import RunOptions

F = TypeVar("F", bound=Callable[..., Any])
DEVICES = ("cpu", "cuda")
SEEDS_EXPECTED = "expected distinct non-negative integers separated by commas"


class AtLeast(click.IntRange):
    """An integer ≥ `minimum`; anything else fails with `expected an integer ≥ N, found X`."""

    def __init__(self, minimum: int) -> None:
        super().__init__(min=minimum)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """`value` (text or int) → the int, or a `click.BadParameter` in the suite's words."""
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"expected an integer ≥ {self.min}, found {value}", param, ctx)


class OneOf(click.Choice):
    """One of `choices`; anything else fails with `expected one of a, b, found 'x'`."""

    def __init__(self, choices: Sequence[str]) -> None:
        super().__init__(tuple(choices))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """`value` → the matching choice, or a `click.BadParameter` naming the choices."""
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            known = ", ".join(map(str, self.choices))
            self.fail(f"expected one of {known}, found {value!r}", param, ctx)


class PositiveNumber(click.ParamType):
    """A finite number > 0 (a threshold, a tolerance)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """`value` (text or number) → a float, finite and > 0, or a `click.BadParameter`."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            self.fail(f"expected a finite number > 0, found {value}", param, ctx)
        return number


def _seeds(text: str) -> tuple[int, ...] | None:
    """`"0,1,2"` → (0, 1, 2); None when `text` is not distinct integers ≥ 0 joined by commas."""
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        return None
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        return None
    return seeds


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """`"0,1,2"` → (0, 1, 2); None → (); anything else is a one-line EpbenchError."""
    if text is None:
        return ()
    seeds = _seeds(text)
    if seeds is None:
        raise EpbenchError(f"--seeds: {SEEDS_EXPECTED}, found {text!r}")
    return seeds


class SeedList(click.ParamType):
    """`--seeds 0,1,2` → (0, 1, 2): distinct integers ≥ 0 (`parse_seeds`)."""

    name = "N,N…"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """`value` (text, or an already parsed tuple) → a tuple of seeds, or a BadParameter."""
        if isinstance(value, tuple):
            return value
        seeds = _seeds(str(value))
        if seeds is None:
            self.fail(f"{SEEDS_EXPECTED}, found {value!r}", param, ctx)
        return seeds


POSITIVE = PositiveNumber()
SEEDS = SeedList()
PATH = click.Path(path_type=Path)


def registry_of(ctx: click.Context) -> Registry:
    """The plugin registry of this invocation: `ctx.obj` when a caller passed one (`obj=`), else
    a `Registry()` built on first use and kept on the context (shared by the group and its
    command, so plugins load once)."""
    return ctx.ensure_object(Registry)


@dataclass(frozen=True)
class CellArgs:
    """The options of a command that runs task cells on backends, as parsed."""

    tasks: tuple[str, ...]
    backend: str
    preset: str
    dtype: str | None
    device: str
    seed: int
    overrides: tuple[str, ...]
    sweeps: tuple[str, ...]
    out: Path
    data_dir: Path | None


def _cell_params(backend_help: str) -> list[Callable[[F], F]]:
    """The click decorators of the `CellArgs` fields, in help order."""
    return [
        click.argument("tasks", nargs=-1, required=True, metavar="TASK…"),
        click.option("--backend", default="", metavar="NAME[,NAME…]", help=backend_help),
        click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="task preset"),
        click.option("--dtype", type=OneOf(DTYPES), help="override the task's dtype"),
        click.option("--device", type=OneOf(DEVICES), default="cpu", show_default=True),
        click.option("--seed", type=AtLeast(0), default=0, show_default=True),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="override a task field, e.g. dynamics.T=100 (repeatable)",
        ),
        click.option(
            "--sweep",
            "sweeps",
            multiple=True,
            metavar="KEY=V1,V2…",
            help="run every cell once per value, as a variant axis named after the key's last "
            "part, e.g. dynamics.estimator=positive,symmetric (repeatable)",
        ),
        click.option(
            "--out", type=PATH, default=Path("results"), show_default=True, help="results folder"
        ),
        click.option("--data-dir", type=PATH, help="folder holding the dataset files"),
    ]


def _gathered(cls: type, keyword: str, params: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Decorator: adds the click `params` to a command and hands their values to it as one
    keyword argument `keyword`, an instance of the dataclass `cls` (whose fields they fill)."""
    names = tuple(field.name for field in fields(cls))

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            gathered = cls(**{name: kwargs.pop(name) for name in names})
            return command(*args, **{keyword: gathered}, **kwargs)

        for param in reversed(params):
            wrapper = param(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def cell_options(*, backend_help: str) -> Callable[[F], F]:
    """Decorator: adds the cell options (TASK…, --backend … --data-dir) to a command and hands
    them to it as one keyword argument `cell_args: CellArgs`, the command's own options beside."""
    return _gathered(CellArgs, "cell_args", _cell_params(backend_help))


@dataclass(frozen=True)
class MatrixArgs:
    """The options of a command that runs a matrix: seeds, timing, resume, where cells run."""

    save_traces: bool
    repeat: int
    seeds: tuple[int, ...] | None
    batch_seeds: bool | None  # None: batched on a GPU, one after the other on a CPU
    resume: bool
    retries: int
    executor: str
    jobs: int | None
    scheduler: str | None
    quiet: bool


def _matrix_params() -> list[Callable[[F], F]]:
    """The click decorators of the `MatrixArgs` fields, in help order."""
    return [
        click.option("--save-traces", is_flag=True, help="write params, batch and traces"),
        click.option(
            "--repeat",
            type=AtLeast(0),
            default=1,
            show_default=True,
            help="steady-state timing repetitions after the first run",
        ),
        click.option("--seeds", type=SEEDS, help="run every cell once per seed (replaces --seed)"),
        click.option(
            "--batch-seeds/--no-batch-seeds",
            default=None,
            help="train the seeds of a cell as one batched network where the backend can "
            "[default: on a GPU only; on a CPU it did not pay: `epbench run seed-speed`]",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="skip cells with an ok record in --out (same config, backend, seed, preset); "
            "training cells continue from their last epoch checkpoint",
        ),
        click.option(
            "--retries",
            type=AtLeast(0),
            default=0,
            show_default=True,
            help="run a failed cell (backend error, worker died) up to N more times",
        ),
        click.option(
            "--executor",
            type=OneOf(EXECUTORS),
            default="local",
            show_default=True,
            help="where cells run: local worker subprocesses, a Dask cluster, or inline",
        ),
        click.option("--jobs", type=AtLeast(1), help="cells at once (local or Dask workers)"),
        click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler, tcp://host:8786"),
        click.option("--quiet", is_flag=True, help="print only the summary table (no progress)"),
    ]


def matrix_options() -> Callable[[F], F]:
    """Decorator: adds the matrix options (--save-traces … --quiet) to a command and hands them
    to it as one keyword argument `matrix_args: MatrixArgs`."""
    return _gathered(MatrixArgs, "matrix_args", _matrix_params())


def run_options(
    cell_args: CellArgs, matrix_args: MatrixArgs | None = None, **arguments: Any
) -> RunOptions:
    """The `RunOptions` of the parsed options (no `matrix_args`: one seed, quiet, no traces);
    `arguments` are the measurement's settings (parity's `against`, …)."""
    more: dict[str, Any] = {"quiet": True}
    if matrix_args is not None:
        more = {
            "seeds": matrix_args.seeds or (),
            "batch_seeds": (
                cell_args.device != "cpu"
                if matrix_args.batch_seeds is None
                else matrix_args.batch_seeds
            ),
            "save_traces": matrix_args.save_traces,
            "repeat": matrix_args.repeat,
            "resume": matrix_args.resume,
            "quiet": matrix_args.quiet,
        }
    return RunOptions(
        device=cell_args.device,
        dtype=cell_args.dtype,
        seed=cell_args.seed,
        data_dir=cell_args.data_dir,
        arguments=tuple(arguments.items()),
        **more,
    )


def cells_of(registry: Registry, args: CellArgs) -> list[TaskSpec]:
    """The task cells the command's arguments name (epbench.config.tasks.select_cells)."""
    return select_cells(
        registry, args.tasks, preset=args.preset, overrides=args.overrides, sweeps=args.sweeps
    )
