"""One self-contained report page (Markdown and HTML) from run records: a sortable table of every
record, a section per measurement with its view's table, a section per run, the figures, the
environment of each run, and links between them.

What comes in: records (`epbench.core.record.read_records`, or the run loop's dicts), the
registry's measurements (`{name: Measurement}`; their views show their records, the suite's own
views `epbench.views.tables.BUILTIN` stand in for a measurement not registered), an output
folder and an image format. What goes out: `<out>/report.md`, `<out>/report.html` and the
figures (`epbench.views.plots`) beside them, referenced by relative paths, so the folder can be
moved or published as a whole. Without matplotlib the page still holds every table and says
how to install the `plot` extra.

The page is built once, from the records, as a list of blocks (heading, paragraph, list, table,
image) and rendered to both formats by the Jinja templates `templates/report.md.j2` and
`templates/report.html.j2`. The sections come from the measurements the records hold, so a new
measurement or figure appears without editing this module. Tables are data (headers, rows of
inline Markdown); a view's table, which the views give as GitHub Markdown, is split into its
cells once (`view_table`). Anchors: `run-N` (record N, in file order), a measurement's name
(`gdu`, `training` for `train`), `fig-NAME` (a figure), `env-N` (an environment).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from epbench.core.paths import make_folder, output_path
from epbench.core.record import Record
from epbench.core.version import __version__
from epbench.views.format import AnyRecord, heading, records_in
from epbench.views.pivot import depth_table, has_depths
from epbench.views.plots import MissingExtraError, Plot, batch_size, figures, save
from epbench.views.tables import (
    BUILTIN,
    format_record,
    generic_table,
    paper_table,
    seed_summary_table,
    usable,
)
from epbench.views.tables import by_measurement as grouped

MARKDOWN, HTML = "report.md", "report.html"
# Section headings of the measurements whose view has no title of its own.
TITLES = {"gdu": "GDU runs", "train": "Training runs"}
ANCHORS = {"train": "training"}


@dataclass(frozen=True, kw_only=True)
class Heading:
    """A heading of `level` (1 = the page's title), with an anchor to link to."""

    level: int
    text: str
    anchor: str | None = None
    kind: str = "heading"


@dataclass(frozen=True, kw_only=True)
class Para:
    """A paragraph."""

    text: str  # inline Markdown: [text](href) links and `code` only
    kind: str = "para"


@dataclass(frozen=True, kw_only=True)
class Table:
    """A table: headers and rows of inline Markdown, and the table as GitHub Markdown."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    markdown: str
    kind: str = "table"


@dataclass(frozen=True, kw_only=True)
class Bullets:
    """A bulleted list."""

    items: tuple[str, ...]  # inline Markdown, like Para
    kind: str = "bullets"


@dataclass(frozen=True, kw_only=True)
class Image:
    """A figure: its file, alternative text and caption."""

    src: str
    alt: str
    caption: str
    kind: str = "image"


Block = Heading | Para | Bullets | Table | Image


# --- tables ---


def _cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


def view_table(markdown: str) -> Table:
    """A view's GitHub Markdown table (header, separator, rows) as a `Table`; text that is no
    table becomes a table of one column holding its lines."""
    lines = [line for line in markdown.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not all(line.lstrip().startswith("|") for line in lines):
        return Table(headers=("",), rows=tuple((line,) for line in lines), markdown=markdown)
    rows = tuple(_cells(line) for line in lines[2:])
    return Table(headers=_cells(lines[0]), rows=rows, markdown=markdown.strip())


def data_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A table built here from values (None shown as —)."""
    from tabulate import tabulate

    text = tuple(tuple("—" if v is None else str(v) for v in row) for row in rows)
    markdown = tabulate(text, headers=list(headers), tablefmt="github", disable_numparse=True)
    return Table(headers=tuple(headers), rows=text, markdown=markdown)


# --- rendering ---

# [text](href), the text may hold balanced brackets (cell names: `mnist-fc[model=P-1h]`); `code`
_INLINE = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])+)\]\(([^)\s]+)\)|`([^`]+)`")


def inline_html(text: str) -> str:
    """Escape `text` for HTML, turning [text](href) into links and `code` into <code>."""
    out, last = [], 0
    for match in _INLINE.finditer(str(text)):
        out.append(html.escape(text[last : match.start()]))
        if match.group(3) is not None:
            out.append(f"<code>{html.escape(match.group(3))}</code>")
        else:
            href = html.escape(match.group(2), quote=True)
            out.append(f'<a href="{href}">{html.escape(match.group(1))}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _environment(*, autoescape: bool) -> Any:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("epbench.views", "templates"),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["inline"] = lambda text: Markup(inline_html(str(text)))
    env.filters["one_line"] = lambda text: " ".join(str(text).split())
    env.filters["md_alt"] = lambda text: str(text).replace("[", "\\[").replace("]", "\\]")
    return env


def render_markdown(blocks: Sequence[Block]) -> str:
    """The page as Markdown (templates/report.md.j2)."""
    return _environment(autoescape=False).get_template("report.md.j2").render(blocks=blocks)


def render_html(blocks: Sequence[Block], *, title: str) -> str:
    """The page as one HTML document titled `title`, its style sheet and the table sorting
    inline (templates/report.html.j2): no file outside the folder is needed."""
    template = _environment(autoescape=True).get_template("report.html.j2")
    return template.render(blocks=blocks, title=title)


# --- content ---


def _text_blocks(text: str) -> list[Block]:
    """Split the text of a view (`format_record`) into tables (lines starting with `|`) and
    paragraphs (every other line)."""
    blocks: list[Block] = []
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            blocks.append(view_table("\n".join(table)))
            table = []
        if line.strip():
            blocks.append(Para(text=line))
    return blocks


def _flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(f"{prefix}{k}.", v)]
    if isinstance(value, list):
        value = " ".join(map(str, value))
    return [(prefix.rstrip("."), str(value))]


def environments(records: Sequence[AnyRecord]) -> tuple[list[dict[str, Any]], list[int]]:
    """The distinct environments of the records and, per record, the index of its environment."""
    keys: dict[str, int] = {}
    distinct, index = [], []
    for record in records_in(records):
        env = dict(record.environment)
        key = json.dumps(env, sort_keys=True)
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append(env)
        index.append(keys[key])
    return distinct, index


def _link(i: int, record: Record) -> str:
    return f"[{record.cell} · {record.backend} · seed {record.seed}](#run-{i + 1})"


def _links(indices: Sequence[int], records: Sequence[Record]) -> str:
    return ", ".join(_link(i, records[i]) for i in indices)


def _config(record: Record, section: str) -> dict[str, Any]:
    """One section of the record's resolved configuration (`dynamics`, `data`, `model`)."""
    value = record.config.get(section)
    return value if isinstance(value, dict) else {}


def _settings(record: Record) -> str:
    dyn, data, model = (_config(record, s) for s in ("dynamics", "data", "model"))
    parts = [
        f"model {model.get('setting')} {model.get('activation')} sizes {model.get('sizes')}"
        + (f", conv {model['conv']}" if model.get("conv") else ""),
        f"β = {record.beta_used} ({record.estimator})",
        f"T = {dyn.get('T')}, K = {dyn.get('K')}",
        f"data {data.get('source')}, batch {batch_size(record)}",
        f"device {record.device}",
        f"config hash `{record.config_hash}`",
    ]
    return "; ".join(parts)


@dataclass(frozen=True, kw_only=True)
class _Page:
    """What the sections of one page share."""

    records: list[Record]
    measurements: Mapping[str, Any]
    env_of: list[int]
    per_run: dict[int, Plot]  # the GDU curves of a record
    across: list[Plot]  # the figures across records
    fmt: str


def _section_title(name: str) -> str:
    """A measurement's section heading: its own (`TITLES`), its view's title, or its name."""
    builtin = BUILTIN.get(name)
    title = TITLES.get(name) or (builtin.title if builtin is not None else "") or name
    return title.rstrip(":")[:1].upper() + title.rstrip(":")[1:]


def _view_table(name: str, found: Sequence[Record], measurements: Mapping[str, Any]) -> str:
    """The table of measurement `name`'s view: the registered measurement's, else the suite's
    own, else the generic one (as `epbench.views.tables.overview` chooses)."""
    view = measurements.get(name) or BUILTIN.get(name)
    return view.table(found) if view is not None else generic_table(found)


def _sections(page: _Page) -> list[tuple[str, str, list[int]]]:
    """(title, anchor, record indices) of each measurement the records hold, in the overview's
    order (`epbench.views.tables.by_measurement`)."""
    index = {id(r): i for i, r in enumerate(page.records)}
    return [
        (
            _section_title(name),
            ANCHORS.get(name, name),
            [index[id(r)] for r in found],
        )
        for name, found in grouped(page.records).items()
    ]


def _records_table(page: _Page) -> Table:
    """Every record in one sortable table: a link to its section, its identity, status, when and
    where it ran (commit, a link to its environment)."""
    rows = [
        (
            f"[{i + 1}](#run-{i + 1})",
            r.cell,
            r.measurement,
            r.backend,
            r.device,
            r.dtype,
            r.seed,
            r.status,
            r.started,
            str(r.environment.get("commit") or "")[:10] or None,
            f"[{page.env_of[i] + 1}](#env-{page.env_of[i] + 1})",
        )
        for i, r in enumerate(page.records)
    ]
    headers = ("run", "cell", "measurement", "backend", "device", "dtype", "seed", "status")
    return data_table((*headers, "started", "commit", "environment"), rows)


def _intro(page: _Page, envs: list[dict[str, Any]], notes: Sequence[str]) -> list[Block]:
    """The title, what the page holds and where it comes from, the contents, every record."""
    records = page.records
    sections = _sections(page)
    sources = sorted({r.file for r in records if r.file})
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # names only, not links: the page is often published without the (large) results folder
    source_names = ", ".join(f"`{Path(s).name}`" for s in sources)
    counts = ", ".join(f"{len(found)} {name}" for name, found in grouped(records).items())
    contents = [
        ("Records", "records", records),
        *((title, anchor, found) for title, anchor, found in sections),
        ("By depth", "depth", [True] if has_depths(records) else []),
        ("Figures across runs", "figures", page.across),
        ("Environments", "environments", envs),
        ("Not drawn", "notes", notes),
    ]
    return [
        Heading(level=1, text="epbench report"),
        Para(
            text=f"Records: {len(records)} ({counts or 'none'}), from "
            f"{source_names or 'records passed in'}; generated {stamp} by epbench "
            f"{__version__}. Each run links to its environment and figures; each figure lists "
            "the runs it shows. Click a column's heading to sort a table."
        ),
        Para(text="Contents: " + " · ".join(f"[{t}](#{a})" for t, a, items in contents if items)),
        Heading(level=2, text="Records", anchor="records"),
        _records_table(page),
    ]


def _run_section(page: _Page, i: int) -> list[Block]:
    """One record's section: heading, settings, environment, figures, its view's text."""
    record = page.records[i]
    shown = [p for p in page.across if i in p.records]
    also = ", ".join(f"[{p.title}](#fig-{p.name})" for p in shown)
    source = f" Source: `{Path(record.file).name}`." if record.file else ""
    blocks: list[Block] = [
        Heading(level=3, text=heading(record), anchor=f"run-{i + 1}"),
        Para(
            text=f"{_settings(record)}. Environment: [environment {page.env_of[i] + 1}]"
            f"(#env-{page.env_of[i] + 1}).{source}" + (f" Figures: {also}." if also else "")
        ),
    ]
    if record.status in ("skipped", "failed") or (
        record.measurement != "train" and record.status != "ok"
    ):
        return [*blocks, Para(text=f"Reason: {record.reason}")]
    blocks += _text_blocks(format_record(record, page.measurements))[1:]
    if i in page.per_run:
        blocks.extend(_image(page.per_run[i], page.fmt))
    return blocks


def _measurement_section(page: _Page, title: str, anchor: str, found: list[int]) -> list[Block]:
    """A measurement's section: its view's table (training: also over seeds and against the
    paper), links to its runs, one section per run."""
    name = page.records[found[0]].measurement
    chosen = [page.records[i] for i in found]
    blocks: list[Block] = [
        Heading(level=2, text=title, anchor=anchor),
        view_table(_view_table(name, chosen, page.measurements)),
    ]
    if name == "train":
        blocks.append(Para(text="Over seeds (final epoch; EP − BPTT paired by seed):"))
        blocks.append(view_table(seed_summary_table(chosen)))
        blocks.append(Para(text="Against the paper (docs/theory.md §5, Table 1):"))
        blocks.append(view_table(paper_table(chosen)))
    blocks.append(Para(text=f"Runs: {_links(found, page.records)}."))
    for i in found:
        blocks += _run_section(page, i)
    return blocks


def _closing(page: _Page, envs: list[dict[str, Any]], notes: Sequence[str]) -> list[Block]:
    """The per-depth table, the figures across runs, the environments, what was not drawn."""
    blocks: list[Block] = []
    if has_depths(page.records):
        blocks.append(Heading(level=2, text="By depth", anchor="depth"))
        blocks.append(view_table(depth_table(page.records)))
    if page.across:
        blocks.append(Heading(level=2, text="Figures across runs", anchor="figures"))
        for plot in page.across:
            blocks.append(Heading(level=3, text=plot.title, anchor=f"fig-{plot.name}"))
            blocks.extend(_image(plot, page.fmt))
            blocks.append(Para(text=f"Runs shown: {_links(plot.records, page.records)}."))
    if envs:
        blocks.append(Heading(level=2, text="Environments", anchor="environments"))
        for k, env in enumerate(envs):
            runs = [i for i, e in enumerate(page.env_of) if e == k]
            blocks.append(Heading(level=3, text=f"Environment {k + 1}", anchor=f"env-{k + 1}"))
            rows = _flat("", env) if env else [("environment", "not recorded")]
            blocks.append(data_table(("key", "value"), rows))
            blocks.append(Para(text=f"Runs: {_links(runs, page.records)}."))
    if notes:
        blocks.append(Heading(level=2, text="Not drawn", anchor="notes"))
        blocks.append(Bullets(items=tuple(notes)))
    return blocks


def build_blocks(
    records: Sequence[AnyRecord],
    plots: Sequence[Plot],
    notes: Sequence[str],
    *,
    fmt: str,
    measurements: Mapping[str, Any] | None = None,
) -> list[Block]:
    """The page: contents, every record, one section per measurement (its view's table, one
    section per run: its tables, its figures, a link to its environment), the per-depth table,
    the figures across runs, the environments, and what was not drawn."""
    records = records_in(records)
    envs, env_of = environments(records)
    page = _Page(
        records=records,
        measurements=measurements or {},
        env_of=env_of,
        per_run={p.records[0]: p for p in plots if p.name.startswith("gdu-curves")},
        across=[p for p in plots if not p.name.startswith("gdu-curves")],
        fmt=fmt,
    )
    blocks = _intro(page, envs, notes)
    for title, anchor, found in _sections(page):
        blocks += _measurement_section(page, title, anchor, found)
    return blocks + _closing(page, envs, notes)


def _image(plot: Plot, fmt: str) -> list[Block]:
    return [Image(src=f"{plot.name}.{fmt}", alt=plot.title, caption=plot.caption)]


def write_report(
    records: Sequence[AnyRecord],
    *,
    out: Path,
    fmt: str = "png",
    measurements: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the figures, `report.md` and `report.html` into `out`; returns their paths and the
    notes on what could not be drawn (including a missing matplotlib). `measurements`: the
    registry's, whose views show their records (module doc)."""
    records = usable(records, measurements)
    out = make_folder(Path(out))
    try:
        plots, notes = figures(records, checked=True)
        paths = save(plots, out, fmt=fmt)
    except MissingExtraError as err:
        plots, notes, paths = [], [f"figures: {err}"], []
    blocks = build_blocks(records, plots, notes, fmt=fmt, measurements=measurements)
    markdown, page = output_path(out, MARKDOWN), output_path(out, HTML)
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks, title="epbench report"), encoding="utf-8")
    return {"markdown": markdown, "html": page, "figures": paths, "notes": notes}
