"""Task files: TOML read into frozen `TaskSpec`s, validated with one-line messages.

A task file holds a base configuration (`[model]`, `[dynamics]`, `[data]`, `[train]`, plus
`description`, `measure`, `dtype`), presets (`[presets.NAME]`, overrides of the base) and variants
(`[variants.AXIS.VALUE]`, overrides that may hold their own `presets.NAME`). A cell is resolved by
deep-merging, later wins: base ← base preset ← variant ← variant preset ← `--set` overrides.
Cells are named `task[axis=value]`; a bare task name expands to all its variants.
See tasks/README.md.

Bad input is a one-line `TaskError` (exit 2 on the command line), found before any cell runs:
every unknown name at every level (the file's top, a section, a preset, a variant, `--set`,
`--sweep`, `overrides.MEASURE`) with the nearest known one (`difflib`); numbers that are not
finite; values beyond `LIMITS` (steps, widths, batches, epochs no run could meet); task, axis
and variant names that are not safe file-name parts (`epbench.core.paths.check_name`); files
that are not UTF-8 (the byte offset is named), larger than `MAX_FILE_BYTES` or nested deeper
than `MAX_NESTING`.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from epbench.core.errors import EpbenchError, TaskError, UnknownNameError
from epbench.core.paths import check_name
from epbench.core.record import nesting_depth
from epbench.core.spec import (
    ACTIVATIONS,
    CELLS,
    DATA_SOURCES,
    DTYPES,
    ESTIMATORS,
    FEEDBACK,
    NUDGES,
    SETTINGS,
    TRAIN_ALGORITHMS,
    ConvSpec,
    DataSpec,
    DynamicsSpec,
    ModelSpec,
    TaskSpec,
    TrainSpec,
)
from epbench.plugins.registry import Registry

DEFAULT_PRESET = "paper"
_SELECTOR = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[(?P<sel>[^\]]*)\])?$")
_MISSING = object()

# field → (kind, required); kind is used both to check and to describe what is expected.
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "model": {
        "setting": ("setting", True),
        "inputs": ("positive integer", True),
        "sizes": ("list of positive integers", True),
        "input_to": ("list of layer indices", False),
        "activation": ("activation", True),
        "epsilon": ("positive number", False),
        "clamp": ("boolean", False),
        "output_derivative": ("boolean", False),
        "conv": ("conv table", False),
        "feedback_angle": ("angle in degrees", False),
        "cell": ("cell kind", False),
        "weight_scale": ("positive number", False),
    },
    "dynamics": {
        "T": ("positive integer", True),
        "K": ("positive integer", True),
        "beta": ("non-zero number", True),
        "estimator": ("estimator", False),
        "points": ("holomorphic point count", False),
        "betas": ("β grid", False),
        "nudge": ("nudge", False),
        "sweep_T": ("list of positive integers", False),
    },
    "data": {
        "source": ("data source", True),
        "batch": ("positive integer", False),
        "index": ("non-negative integer", False),
        "subset": ("non-negative integer", False),
    },
    "train": {
        "epochs": ("positive integer", False),
        "lrs": ("list of positive numbers", False),
        "test_batch": ("positive integer", False),
        "feedback": ("feedback", False),
        "algorithms": ("algorithms", False),
    },
}
_TOP = {
    "description",
    "measure",
    "dtype",
    "presets",
    "variants",
    "select",
    "overrides",
    *_SCHEMA,
}
# Alternative spellings accepted in task files and --set, renamed before merging (later wins).
_ALIASES = {"data": {"name": "source"}}
# What one layer of a configuration (the base, a preset, a variant, --set) may hold.
_LAYER = ("description", "measure", "dtype", *_SCHEMA, "overrides")
# Largest values a run could ever meet: steps, widths, batches, epochs (field → limit).
LIMITS = MappingProxyType(
    {
        "model.inputs": 10**6,
        "model.sizes": 10**5,
        "model.conv.input": 10**4,
        "model.conv.channels": 10**4,
        "model.conv.kernel": 10**3,
        "model.conv.padding": 10**3,
        "model.conv.pool": 10**3,
        "dynamics.T": 10**6,
        "dynamics.K": 10**6,
        "dynamics.sweep_T": 10**6,
        "data.batch": 10**6,
        "data.index": 10**7,
        "data.subset": 10**7,
        "train.epochs": 10**4,
        "train.test_batch": 10**6,
    }
)
MAX_LAYERS = 64  # entries of model.sizes
MAX_FILE_BYTES = 1 << 20  # a task file
MAX_NESTING = 16  # tables inside tables of a task file (the schema needs 7)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `over`, recursively for nested tables (neither input is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def canonical(table: Mapping[str, Any], where: str = "task") -> dict[str, Any]:
    """`table` with alias fields renamed (`data.name` → `data.source`), so that a later layer's
    `data.name` overrides an earlier layer's `data.source`; both in one layer must agree."""
    out = dict(table)
    for section, names in _ALIASES.items():
        if not isinstance(out.get(section), Mapping):
            continue
        fields = dict(out[section])
        for alias, name in names.items():
            if alias not in fields:
                continue
            value = fields.pop(alias)
            if name in fields and fields[name] != value:
                raise TaskError(
                    where, f"{section}.{alias}", f"the same value as {section}.{name}", value
                )
            fields[name] = value
        out[section] = fields
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`"dynamics.T=100"` → `{"dynamics": {"T": 100}}`; the value is TOML (else a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TaskError("--set", text, "key=value with a dotted key such as dynamics.T=100", text)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _parse_toml(data: bytes, where: str) -> dict[str, Any]:
    """The TOML document in `data`: UTF-8 (a decoding error names its byte offset), at most
    `MAX_FILE_BYTES`, nested at most `MAX_NESTING` deep; else a one-line TaskError."""
    if len(data) > MAX_FILE_BYTES:
        raise TaskError(where, "file", f"a task file of at most {MAX_FILE_BYTES} bytes", len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskError(
            where,
            "file",
            "UTF-8 text",
            _Text(f"byte {data[err.start]:#04x} at byte offset {err.start}"),
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TaskError(where, "file", "valid TOML", str(err)) from None
    except RecursionError:
        raise TaskError(
            where, "file", f"tables nested at most {MAX_NESTING} deep", _Text("deeper nesting")
        ) from None
    if nesting_depth(raw, limit=MAX_NESTING) > MAX_NESTING:
        raise TaskError(
            where, "file", f"tables nested at most {MAX_NESTING} deep", _Text("deeper nesting")
        )
    return raw


def read_task_file(path: Path) -> dict[str, Any]:
    """Parse a task file (`_parse_toml`); a syntax error, a bad encoding, a file too large or
    too deeply nested, or an unknown top-level name is a one-line TaskError naming the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise TaskError(str(path), "file", "a readable task file", err.strerror) from None
    raw = _parse_toml(data, str(path))
    for key in raw:
        if key not in _TOP:
            raise _unknown(str(path), key, key, sorted(_TOP))
    return raw


def _unknown(where: str, field: str, name: str, known: Collection[str]) -> TaskError:
    """The TaskError of an unknown name: what is known, and the nearest known name."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TaskError(
        where, field, f"one of {', '.join(map(str, known))}", _Text(f"an unknown name{hint}")
    )


def _check_section_names(section: str, table: Mapping[str, Any], *, where: str, path: str) -> None:
    """Every field of `[section]` (and of `[model.conv]`) is a known one."""
    known = (*_SCHEMA[section], *_ALIASES.get(section, {}))
    for field, value in table.items():
        if field not in known:
            raise _unknown(where, f"{path}.{field}", field, known)
        if (section, field) == ("model", "conv") and isinstance(value, Mapping):
            for key in value:
                if key not in _CONV_SCHEMA:
                    raise _unknown(where, f"{path}.conv.{key}", key, tuple(_CONV_SCHEMA))


def check_layer_names(
    table: Any, *, where: str, path: str = "", known: Collection[str] = _LAYER
) -> None:
    """Every name of one layer of a configuration (the base, a preset, a variant, `--set`, an
    `overrides.MEASURE` table) is known, at every level; else a one-line TaskError naming the
    nearest known name. Values are checked later (`build_spec`)."""
    if not isinstance(table, Mapping):
        raise TaskError(where, path.rstrip(".") or "table", "a table", table)
    for key, value in table.items():
        field = f"{path}{key}"
        if key not in known:
            raise _unknown(where, field, key, known)
        if key in _SCHEMA:
            if not isinstance(value, Mapping):
                raise TaskError(where, field, "a table", value)
            _check_section_names(key, value, where=where, path=field)
        elif key == "overrides" and isinstance(value, Mapping):
            for measure, over in value.items():
                check_layer_names(over, where=where, path=f"{field}.{measure}.", known=_OVERRIDABLE)


def _check_file_names(
    raw: Mapping[str, Any], axes: Mapping[str, Mapping[str, Any]], where: str
) -> None:
    """The names of a whole task file: the base, every preset, every variant and its presets;
    axis and variant names are safe file-name parts (`check_name`)."""
    base = {k: v for k, v in raw.items() if k not in ("presets", "variants", "select")}
    check_layer_names(base, where=where)
    for preset, table in _presets_of(raw).items():
        check_layer_names(table, where=where, path=f"presets.{preset}.")
    for axis, values in axes.items():
        check_name(axis, what="variant axis", where=where)
        for value, table in values.items():
            check_name(value, what=f"variant name of axis {axis!r}", where=where)
            prefix = f"variants.{axis}.{value}."
            check_layer_names(
                {k: v for k, v in table.items() if k != "presets"}, where=where, path=prefix
            )
            for preset, over in _presets_of(table).items():
                check_layer_names(over, where=where, path=f"{prefix}presets.{preset}.")


def _axes(raw: Mapping[str, Any], where: str) -> dict[str, dict[str, dict[str, Any]]]:
    variants = raw.get("variants", {})
    if not isinstance(variants, Mapping) or not all(
        isinstance(values, Mapping) and all(isinstance(v, Mapping) for v in values.values())
        for values in variants.values()
    ):
        raise TaskError(where, "variants", "tables [variants.AXIS.VALUE]", variants)
    return {axis: dict(values) for axis, values in variants.items()}


def _presets_of(table: Mapping[str, Any]) -> dict[str, Any]:
    presets = table.get("presets", {})
    return dict(presets) if isinstance(presets, Mapping) else {}


def preset_names(raw: Mapping[str, Any]) -> list[str]:
    """Presets a task file defines, at the top or inside any variant."""
    names = set(_presets_of(raw))
    for values in raw.get("variants", {}).values():
        for table in values.values():
            names |= set(_presets_of(table))
    return sorted(names | {DEFAULT_PRESET})


def variant_names(raw: Mapping[str, Any], where: str = "task") -> list[tuple[tuple[str, str], ...]]:
    """Every combination of axis values, as ((axis, value), …) tuples; [()] without variants."""
    axes = _axes(raw, where)
    if not axes:
        return [()]
    return [
        tuple(zip(axes, combo, strict=True))
        for combo in itertools.product(*(list(values) for values in axes.values()))
    ]


def cell_name(task: str, variant: tuple[tuple[str, str], ...]) -> str:
    return task + ("[" + ",".join(f"{a}={v}" for a, v in variant) + "]" if variant else "")


def parse_selector(text: str) -> tuple[str, dict[str, str]]:
    """`"mnist-fc[model=P-1h]"` → ("mnist-fc", {"model": "P-1h"})."""
    match = _SELECTOR.match(text.strip())
    if match is None:
        raise TaskError("command line", "task", "NAME or NAME[axis=value,…]", text)
    selection: dict[str, str] = {}
    for part in filter(None, (match["sel"] or "").split(",")):
        axis, sep, value = part.partition("=")
        if not sep:
            raise TaskError("command line", text, "axis=value inside the brackets", part)
        selection[axis.strip()] = value.strip()
    return match["name"], selection


def parse_sweep(text: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """`"dynamics.estimator=positive,symmetric"` → ("estimator", {"positive": {"dynamics":
    {"estimator": "positive"}}, …}): a variant axis named after the last key part, one value per
    comma-separated item (each TOML, else a string, as in `parse_override`)."""
    key, sep, raw = text.partition("=")
    items = [item.strip() for item in raw.split(",")]
    if not sep or not key.strip() or not all(items) or len(set(items)) != len(items):
        raise TaskError(
            "--sweep",
            text,
            "KEY=V1,V2,… with a dotted key and distinct values, e.g. "
            "dynamics.estimator=positive,symmetric",
            text,
        )
    return key.strip().split(".")[-1], {v: parse_override(f"{key}={v}") for v in items}


def _sweeps(
    sweeps: Iterable[str], axes: Mapping[str, Any], *, name: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """The `--sweep` axes (`parse_sweep`): each a new axis of task `name`, its key a known
    field, its axis and values safe names (`check_name`)."""
    swept = {}
    for text in sweeps:
        axis, values = parse_sweep(text)
        if axis in axes:
            raise TaskError("--sweep", axis, f"an axis not in task {name!r}", "a variant axis")
        check_name(axis, what="axis", where=f"--sweep {text}")
        for value, layer in values.items():
            check_name(value, what="value", where=f"--sweep {text}")
            check_layer_names(layer, where=f"--sweep {text}")
        swept[axis] = values
    return swept


def _selected(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    """The task's `select` table: the value a bare task name runs for some axes."""
    select = raw.get("select", {})
    if not isinstance(select, Mapping) or not all(isinstance(v, str) for v in select.values()):
        raise TaskError(where, "select", 'a table of axis = "value"', select)
    return dict(select)


def _check_selection(
    selection: Mapping[str, str], axes: Mapping[str, Mapping[str, Any]], *, name: str
) -> None:
    """Every selected axis exists and every selected value (a pattern) matches one of its."""
    for axis, value in selection.items():
        if axis not in axes:
            raise UnknownNameError(f"variant axis of task {name!r}", axis, list(axes))
        if not any(fnmatch.fnmatchcase(v, value) for v in axes[axis]):
            raise UnknownNameError(f"{axis} of task {name!r}", value, list(axes[axis]))


def _variant_config(
    base: dict[str, Any],
    variant: tuple[tuple[str, str], ...],
    *,
    axes: Mapping[str, Mapping[str, Any]],
    swept: Mapping[str, Mapping[str, Any]],
    over: dict[str, Any],
    preset: str,
    where: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configuration of one variant: the task's base, each variant table with its preset,
    the `--set` overrides, then the `--sweep` values; and `last`, the changes (`--set` without
    its `overrides` tables, and the sweeps) that also win over `overrides.MEASURE` tables."""
    config = base
    for axis, value in variant:
        if axis in swept:
            continue
        table = axes[axis][value]
        config = deep_merge(
            config, canonical({k: v for k, v in table.items() if k != "presets"}, where)
        )
        config = deep_merge(config, canonical(_presets_of(table).get(preset, {}), where))
    config = deep_merge(config, over)
    last = {k: v for k, v in over.items() if k != "overrides"}
    for axis, value in variant:
        if axis in swept:
            last = deep_merge(last, canonical(swept[axis][value], "--sweep"))
    return deep_merge(config, last), last


def resolve(
    path: Path,
    *,
    name: str | None = None,
    selection: Mapping[str, str] | None = None,
    preset: str = DEFAULT_PRESET,
    overrides: Iterable[str] = (),
    sweeps: Iterable[str] = (),
    measurements: Collection[str] | None = None,
) -> list[TaskSpec]:
    """The validated cells of one task file for one preset (all variants matching `selection`).

    The task's `select` table fills in the axes `selection` leaves out; a selection value may
    hold `*` wildcards (`model=P-*`; `*` alone takes every value of its axis). Each `sweeps` item
    (`parse_sweep`) adds a variant axis applied after the `--set` `overrides`: every cell runs
    once per value, named `task[…,axis=value]`. A cell whose configuration has an
    `overrides.MEASURE` table gives one spec per such measurement (`split_measures`), all under
    the cell's name; `--set` and `--sweep` apply to each of them after that table. Measurement
    names are checked against `measurements` (default: those the installed plugins register).
    """
    registered = tuple(measurements) if measurements is not None else measurement_names()
    path = Path(path)
    name = name or path.stem
    where = str(path)
    check_name(name, what="task name", where=where)
    raw = read_task_file(path)
    if preset not in preset_names(raw):
        raise UnknownNameError(f"preset of task {name!r}", preset, preset_names(raw))
    axes = _axes(raw, where)
    _check_file_names(raw, axes, where)
    swept = _sweeps(sweeps, axes, name=name)
    selection = {**_selected(raw, where), **(selection or {})}
    _check_selection(selection, {**axes, **swept}, name=name)
    over = {}
    for text in overrides:
        layer = parse_override(text)
        check_layer_names(layer, where=f"--set {text}")
        over = deep_merge(over, canonical(layer, "--set"))
    base = canonical(
        {k: v for k, v in raw.items() if k not in ("presets", "variants", "select")}, where
    )
    base = deep_merge(base, canonical(_presets_of(raw).get(preset, {}), where))
    sweep_cells = [
        tuple(zip(swept, combo, strict=True))
        for combo in itertools.product(*(list(values) for values in swept.values()))
    ]
    cells = []
    for variant in (v + s for v in variant_names(raw, where) for s in sweep_cells):
        if not all(fnmatch.fnmatchcase(dict(variant)[a], v) for a, v in selection.items()):
            continue
        config, last = _variant_config(
            base, variant, axes=axes, swept=swept, over=over, preset=preset, where=where
        )
        cell = cell_name(name, variant)
        where_cell = f"{where} ({cell}, preset {preset})"
        for part in split_measures(config, where_cell, last=last, measurements=registered):
            cells.append(
                build_spec(
                    part,
                    name=name,
                    cell=cell,
                    preset=preset,
                    variant=variant,
                    where=where_cell,
                    measurements=registered,
                )
            )
    return cells


_OVERRIDABLE = ("model", "dynamics", "data", "train", "dtype")


def measurement_names() -> tuple[str, ...]:
    """The names of the measurements the installed plugins register (epbench.plugins)."""
    return tuple(Registry().get_measurements())


def split_measures(
    config: Mapping[str, Any],
    where: str,
    *,
    last: Mapping[str, Any] | None = None,
    measurements: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """A resolved configuration → one configuration per group of measurements: those without an
    `overrides.MEASURE` table share the configuration (without `overrides`); each measurement
    with one gets the configuration merged with it and `measure = [MEASURE]` (a table for a
    measurement the cell does not run is unused). So one cell can run, say, `gdu` with tanh and
    `train` with sigm (tasks/depth-scaling.toml), and each record holds the configuration its
    measurement actually ran. `last` (the `--set` and `--sweep`
    changes) is merged into every configuration after its overrides."""
    measure = config.get("measure", ["gdu"])
    over = config.get("overrides", {})
    known = tuple(measurements) if measurements is not None else measurement_names()
    plain = {k: v for k, v in config.items() if k != "overrides"}
    if not over:
        return [plain]
    if not isinstance(over, Mapping) or not isinstance(measure, list):
        raise TaskError(where, "overrides", "tables [overrides.MEASURE]", over)
    for key, table in over.items():  # one for a measurement the cell does not run is unused
        if key not in known:
            raise _unknown(where, f"overrides.{key}", key, known)
        if not isinstance(table, Mapping) or set(table) - set(_OVERRIDABLE):
            raise TaskError(
                where, f"overrides.{key}", f"a table of {', '.join(_OVERRIDABLE)}", table
            )
    shared = [m for m in measure if m not in over]
    out = [{**plain, "measure": shared}] if shared else []
    return out + [
        {**deep_merge(deep_merge(plain, canonical(over[m], where)), last or {}), "measure": [m]}
        for m in measure
        if m in over
    ]


def config_hash(config: Mapping[str, Any]) -> str:
    """Short SHA-256 of the resolved configuration (stable key order)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Integer kinds with a lower bound: kind → (floor, what is expected). `dynamics.points` is the
# number of holomorphic EP's nudges on the circle of radius |β| (docs/theory.md §2.5).
INTEGER_FLOORS = MappingProxyType(
    {
        "non-negative integer": (0, "a non-negative integer"),
        "holomorphic point count": (2, "an integer N ≥ 2 (holomorphic EP's nudge points)"),
    }
)


def _check(where: str, field: str, kind: str, value: Any) -> Any:
    """Validate one field value against its kind; return it normalised (tuples for lists)."""

    def fail(expected: str) -> None:
        raise TaskError(where, field, expected, value)

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:  # finite, and within a float's range (TOML ints are unbounded)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return math.isfinite(v) if isinstance(v, float) else abs(v) < 2**1023

    choices = {
        "setting": SETTINGS,
        "activation": ACTIVATIONS,
        "estimator": ESTIMATORS,
        "data source": DATA_SOURCES,
        "feedback": FEEDBACK,
        "nudge": NUDGES,
    }
    if kind in choices:
        if value not in choices[kind]:
            fail(f"one of {', '.join(choices[kind])}")
        return value
    if kind == "positive integer":
        if not is_int(value) or value <= 0:
            fail("a positive integer")
    elif kind in INTEGER_FLOORS:  # an integer ≥ its floor
        if not is_int(value) or value < INTEGER_FLOORS[kind][0]:
            fail(INTEGER_FLOORS[kind][1])
    elif kind == "positive number":
        if not is_num(value) or value <= 0:
            fail("a positive number" if is_num(value) else "a finite positive number")
        return float(value)
    elif kind == "non-zero number":
        if not is_num(value) or value == 0:
            fail("a non-zero number" if is_num(value) else "a finite non-zero number")
        return float(value)
    elif kind == "angle in degrees":
        if not is_num(value) or not 0 <= value <= 180:
            fail("an angle in degrees between 0 and 180")
        return float(value)
    elif kind == "boolean":
        if not isinstance(value, bool):
            fail("true or false")
    elif kind == "list of positive integers":
        if not isinstance(value, list) or not value or not all(is_int(v) and v > 0 for v in value):
            fail("a list of positive integers")
        return tuple(value)
    elif kind == "list of layer indices":
        if not isinstance(value, list) or not all(is_int(v) and v >= 0 for v in value):
            fail("a list of layer indices (integers ≥ 0)")
        return tuple(value)
    elif kind == "β grid":
        if (
            not isinstance(value, list)
            or len(value) == 1
            or not all(is_num(v) and v > 0 for v in value)
            or len(set(value)) != len(value)
        ):
            fail("two or more distinct finite positive numbers (|β| values; [] = default)")
        return tuple(float(v) for v in value)
    elif kind == "list of positive numbers":
        if not isinstance(value, list) or not all(is_num(v) and v > 0 for v in value):
            fail("a list of finite positive numbers")
        return tuple(float(v) for v in value)
    elif kind == "algorithms":
        return _algorithms(where, field, value)
    elif kind == "conv table":
        return _conv_table(where, field, value)
    return value


def _algorithms(where: str, field: str, value: Any) -> tuple[str, ...]:
    """`train.algorithms`: a non-empty list of distinct names of TRAIN_ALGORITHMS, as a tuple."""
    if (
        not isinstance(value, list)
        or not value
        or any(v not in TRAIN_ALGORITHMS for v in value)
        or len(set(value)) != len(value)
    ):
        expected = f"a non-empty list of distinct algorithms among {', '.join(TRAIN_ALGORITHMS)}"
        raise TaskError(where, field, expected, value)
    return tuple(value)


def _check_limit(where: str, field: str, value: Any) -> Any:
    """`value` (a checked integer or tuple of integers) when within `LIMITS[field]` (and
    `MAX_LAYERS` entries for `model.sizes`); else a TaskError naming the limit."""
    limit = LIMITS.get(field)
    if limit is None:
        return value
    items = value if isinstance(value, tuple) else (value,)
    if field == "model.sizes" and len(items) > MAX_LAYERS:
        raise TaskError(where, field, f"at most {MAX_LAYERS} layers", len(items))
    for item in items:
        if isinstance(item, int) and item > limit:
            raise TaskError(
                where, field, f"a value ≤ {limit} (the limit of a run that can end)", item
            )
    return value


# [model.conv] (a ConvSpec): field → (kind, required), checked by `_check`.
_CONV_SCHEMA: dict[str, tuple[str, bool]] = {
    "input": ("list of positive integers", True),
    "channels": ("list of positive integers", True),
    "kernel": ("positive integer", False),
    "padding": ("non-negative integer", False),
    "pool": ("positive integer", False),
}


def _conv_table(where: str, field: str, value: Any) -> ConvSpec:
    """`[model.conv]` → ConvSpec, each field checked; the geometry is checked by `_check_conv`."""
    if not isinstance(value, Mapping):
        raise TaskError(where, field, "a table [model.conv]", value)
    out = _checked_table(value, _CONV_SCHEMA, where=where, prefix=field)
    if len(out["input"]) != 3:
        raise TaskError(where, f"{field}.input", "[channels, height, width]", list(out["input"]))
    return ConvSpec(**out)


def _check_conv(model: ModelSpec, where: str) -> None:
    """The geometry of a conv model fits (docs/theory.md §3, P-conv): P setting, input into layer N
    only, `inputs` = C·H·W, every kernel within its (padded) input, every pooling dividing its
    conv output, `sizes` = `conv.sizes(outputs)`."""
    conv = model.conv
    assert conv is not None
    if model.setting != "P":
        raise TaskError(
            where, "model.setting", "P for a conv model (docs/theory.md §3)", model.setting
        )
    if model.input_to not in ((), (len(conv.channels),)):
        raise TaskError(
            where,
            "model.input_to",
            f"[] or [{len(conv.channels)}] (the input feeds the last conv layer only)",
            list(model.input_to),
        )
    c, h, w = conv.input
    if model.inputs != c * h * w:
        raise TaskError(
            where, "model.inputs", f"{c * h * w} (= {c}·{h}·{w}, model.conv.input)", model.inputs
        )
    if conv.padding >= conv.kernel:
        raise TaskError(
            where, "model.conv.padding", f"an integer < kernel (= {conv.kernel})", conv.padding
        )
    for i, channels in enumerate(conv.channels):
        label = f"conv layer {i + 1} from the input ({channels} channels)"
        ph, pw = h + 2 * conv.padding, w + 2 * conv.padding
        if conv.kernel > min(ph, pw):
            raise TaskError(
                where,
                "model.conv.kernel",
                f"a kernel ≤ {min(ph, pw)}: the padded input of {label} is {ph}×{pw}",
                conv.kernel,
            )
        oh, ow = ph - conv.kernel + 1, pw - conv.kernel + 1
        if oh % conv.pool or ow % conv.pool:
            raise TaskError(
                where,
                "model.conv.pool",
                f"a pool size dividing the {oh}×{ow} output of {label}",
                conv.pool,
            )
        h, w = oh // conv.pool, ow // conv.pool
    want = conv.sizes(model.outputs)
    if model.sizes != want:
        raise TaskError(
            where,
            "model.sizes",
            f"{list(want)} (the output, then C·H·W of conv layers 1 … {len(conv.channels)})",
            list(model.sizes),
        )


def _section(config: Mapping[str, Any], section: str, where: str) -> dict[str, Any]:
    table = config.get(section, {})
    if not isinstance(table, Mapping):
        raise TaskError(where, section, "a table", table)
    return _checked_table(table, _SCHEMA[section], where=where, prefix=section)


def _checked_table(
    table: Mapping[str, Any], schema: Mapping[str, tuple[str, bool]], *, where: str, prefix: str
) -> dict[str, Any]:
    """The fields of `table` checked against `schema` (field → (kind, required)): an unknown
    field or a missing required one is a TaskError at `prefix.field`."""
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise _unknown(where, f"{prefix}.{unknown[0]}", unknown[0], tuple(schema))
    out = {}
    for field, (kind, required) in schema.items():
        if field not in table:
            if required:
                raise TaskError(
                    where, f"{prefix}.{field}", f"a {kind} (required)", _Text("nothing")
                )
            continue
        checked = _check(where, f"{prefix}.{field}", kind, table[field])
        out[field] = _check_limit(where, f"{prefix}.{field}", checked)
    return out


class _Text:
    """A found value shown as plain text (`found nothing`, not `found 'nothing'`)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _check_sections(
    model: ModelSpec, dynamics: DynamicsSpec, data: DataSpec, train: TrainSpec, where: str
) -> None:
    """The checks across the fields of the model, dynamics, data and train sections."""
    if model.conv is not None:
        _check_conv(model, where)
    depth = model.depth
    if depth < 1:
        raise TaskError(
            where, "model.sizes", "at least two layers (output + ≥ 1 hidden)", list(model.sizes)
        )
    if any(n > depth for n in model.input_layers):
        raise TaskError(
            where, "model.input_to", f"layer indices between 0 and {depth}", list(model.input_to)
        )
    if model.feedback_angle is not None and model.conv is not None:
        raise TaskError(
            where,
            "model.feedback_angle",
            "no angle for a conv model (fully connected only)",
            model.feedback_angle,
        )
    if train.feedback != "ep" and model.feedback_angle is None:
        raise TaskError(
            where,
            "train.feedback",
            '"ep" (the default) for a tied model; "frozen" needs model.feedback_angle',
            train.feedback,
        )
    if model.setting == "P" and not model.output_derivative:
        raise TaskError(
            where,
            "model.output_derivative",
            "true in the P setting (only the EB output update has a factor ρ'(s⁰), "
            "docs/theory.md §3.2)",
            model.output_derivative,
        )
    if model.setting == "P" and model.epsilon != 1.0:
        raise TaskError(
            where,
            "model.epsilon",
            "1.0 in the P setting (step 1, docs/theory.md §3)",
            model.epsilon,
        )
    if dynamics.K > dynamics.T:
        raise TaskError(
            where, "dynamics.K", f"an integer ≤ dynamics.T (= {dynamics.T})", dynamics.K
        )
    if data.source in ("mnist", "fashion-mnist") and (model.inputs, model.outputs) != (784, 10):
        raise TaskError(
            where,
            "model",
            f"inputs = 784 and sizes[0] = 10 for {data.source}",
            {"inputs": model.inputs, "sizes[0]": model.outputs},
        )
    if train.lrs and len(train.lrs) != len(model.sizes):
        raise TaskError(
            where,
            "train.lrs",
            f"{len(model.sizes)} learning rates (one per layer, output first)",
            list(train.lrs),
        )


def _check_measure(
    measure: Any,
    model: ModelSpec,
    dynamics: DynamicsSpec,
    data: DataSpec,
    train: TrainSpec,
    where: str,
    *,
    known: Collection[str],
) -> None:
    """`measure` is a list of registered measurement names, and the settings they need hold."""
    if not isinstance(measure, list) or not measure or any(m not in known for m in measure):
        raise TaskError(where, "measure", f"a list of {', '.join(known)}", measure)
    if dynamics.nudge == "unsaturated":
        if measure != ["gdu"]:
            raise TaskError(
                where,
                "dynamics.nudge",
                '"output" unless the only measurement is gdu',
                "unsaturated",
            )
        if model.activation != "hardsigm" and not model.clamp:
            raise TaskError(
                where,
                "dynamics.nudge",
                '"output" for a model whose output does not saturate (not hardsigm, no clamp)',
                "unsaturated",
            )
    if "train" in measure:
        if not train.lrs:
            raise TaskError(
                where,
                "train.lrs",
                f"{len(model.sizes)} learning rates (required by measure train)",
                _Text("nothing"),
            )
        if data.source not in ("mnist", "fashion-mnist"):
            raise TaskError(
                where, "data.source", "mnist or fashion-mnist for measure train", data.source
            )
        if data.subset and data.subset < data.batch:
            raise TaskError(
                where, "data.subset", f"0 (all) or ≥ data.batch (= {data.batch})", data.subset
            )


# ---- standard RNN baselines (model.cell, docs/theory.md §6.4)

RNN_MEASURES = ("train", "gradient-flow")  # what a standard RNN cell can be measured with


def _check_standard_rnn(model: ModelSpec, train: TrainSpec, measure: list, where: str) -> None:
    """A standard RNN (`model.cell` rnn or lstm) is a fully connected, tied tanh network in the
    P setting, trained by BPTT only, measured by `RNN_MEASURES` only (EP needs a Φ)."""
    if model.cell not in CELLS:
        raise TaskError(where, "model.cell", f"one of {', '.join(CELLS)}", model.cell)
    if model.cell == "phi":
        return
    fixed = {
        "setting": ("P", '"P"'),
        "activation": ("tanh", '"tanh"'),
        "input_to": ((), "[]"),
        "conv": (None, "no [model.conv]"),
        "feedback_angle": (None, "no angle"),
        "clamp": (False, "false"),
    }
    for name, (value, text) in fixed.items():
        if getattr(model, name) != value:
            raise TaskError(
                where, f"model.{name}", f"{text} for model.cell = {model.cell!r}",
                getattr(model, name),
            )  # fmt: skip
    if "train" in measure and "ep" in train.algorithms:
        raise TaskError(
            where,
            "train.algorithms",
            f'["bptt"] for model.cell = {model.cell!r} (EP needs a primitive Φ)',
            list(train.algorithms),
        )
    other = [m for m in measure if m not in RNN_MEASURES]
    if other:
        raise TaskError(
            where,
            "measure",
            f"measurements among {', '.join(RNN_MEASURES)} for model.cell = {model.cell!r}",
            measure,
        )


def build_spec(
    config: Mapping[str, Any],
    *,
    name: str,
    cell: str,
    preset: str,
    variant: tuple[tuple[str, str], ...],
    where: str,
    measurements: Collection[str] | None = None,
) -> TaskSpec:
    """Validate a resolved configuration and turn it into a `TaskSpec`; its `measure` names are
    checked against `measurements` (default: the registered ones)."""
    model = ModelSpec(**_section(config, "model", where))
    dynamics = DynamicsSpec(**_section(config, "dynamics", where))
    data = DataSpec(**_section(config, "data", where))
    train = TrainSpec(**_section(config, "train", where))
    _check_sections(model, dynamics, data, train, where)
    measure = config.get("measure", ["gdu"])
    known = tuple(measurements) if measurements is not None else measurement_names()
    _check_measure(measure, model, dynamics, data, train, where, known=known)
    _check_standard_rnn(model, train, measure, where)
    dtype = config.get("dtype", "float64")
    if dtype not in DTYPES:
        raise TaskError(where, "dtype", f"one of {', '.join(DTYPES)}", dtype)
    description = config.get("description", "")
    if not isinstance(description, str):
        raise TaskError(where, "description", "a string", description)
    plain = {k: v for k, v in config.items() if k not in ("presets", "variants")}
    return TaskSpec(
        name=name,
        cell=cell,
        description=description,
        preset=preset,
        variant=variant,
        measure=tuple(measure),
        model=model,
        dynamics=dynamics,
        data=data,
        train=train,
        dtype=dtype,
        source=where,
        config=plain,
    )


def select_cells(
    registry: Registry,
    tasks: Iterable[str],
    *,
    preset: str = DEFAULT_PRESET,
    overrides: Iterable[str] = (),
    sweeps: Iterable[str] = (),
) -> list[TaskSpec]:
    """The validated task cells `tasks` names (registered names, `name[axis=value]` selectors,
    or `.toml` paths) for `preset`, the `--set` overrides and the `--sweep` axes."""
    cells: list[TaskSpec] = []
    options = {"preset": preset, "overrides": tuple(overrides), "sweeps": tuple(sweeps)}
    for text in tasks:
        if text.endswith(".toml"):
            path = Path(text)
            if not path.is_file():
                raise EpbenchError(
                    f"task file {text}: expected a readable TOML file, found nothing"
                )
            cells += resolve(path, **options)
            continue
        name, selection = parse_selector(text)
        cells += resolve(registry.get_task_path(name), name=name, selection=selection, **options)
    return cells
