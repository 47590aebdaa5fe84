"""One self-contained report page (Markdown and HTML) from run records: tables, figures, the
environment of each run, and links between them.

What comes in: records (`epbench.core.record.read_records`, or the run loop's dicts), an output
folder and an image format. What goes out: `<out>/report.md`, `<out>/report.html` and the figures
(`epbench.views.plots`) beside them, referenced by relative paths, so the folder can be moved or
published as a whole. Without matplotlib the page still holds every table and says how to
install the `plot` extra.

The page is built once as a list of blocks (heading, paragraph, table, image) and rendered to both
formats; tables are the views of the records (epbench.views, GitHub Markdown), converted to
HTML here. Anchors: `run-N` (record N, in file order), `fig-NAME` (a figure), `env-N` (an
environment).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from epbench.core.paths import make_folder, output_path
from epbench.core.record import Record
from epbench.core.version import __version__
from epbench.views.format import AnyRecord, heading, records_in
from epbench.views.gdu import gdu_table, layer_table
from epbench.views.parity import parity_table
from epbench.views.pivot import depth_table, has_depths
from epbench.views.plots import MissingExtraError, Plot, batch_size, figures, save
from epbench.views.rtrl import rtrl_table
from epbench.views.speed_tables import memory_table, speed_table
from epbench.views.sweep import sweep_table
from epbench.views.tables import format_record, usable
from epbench.views.train import paper_table, seed_summary_table, train_table

MARKDOWN, HTML = "report.md", "report.html"


@dataclass(frozen=True, kw_only=True)
class Heading:
    """A heading of `level` (1 = the page's title), with an anchor to link to."""

    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True, kw_only=True)
class Para:
    """A paragraph."""

    text: str  # inline Markdown: [text](href) links and `code` only


@dataclass(frozen=True, kw_only=True)
class Table:
    """A table."""

    markdown: str  # a GitHub Markdown table (tabulate's "github" format)


@dataclass(frozen=True, kw_only=True)
class Bullets:
    """A bulleted list."""

    items: tuple[str, ...]  # inline Markdown, like Para


@dataclass(frozen=True, kw_only=True)
class Image:
    """A figure: its file, alternative text and caption."""

    src: str
    alt: str
    caption: str


Block = Heading | Para | Bullets | Table | Image


# --- rendering ---

# [text](href), the text may hold balanced brackets (cell names: `mnist-fc[model=P-1h]`); `code`
_INLINE = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])+)\]\(([^)\s]+)\)|`([^`]+)`")


def _inline_html(text: str) -> str:
    """Escape `text` for HTML, turning [text](href) into links and `code` into <code>."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        if match.group(3) is not None:
            out.append(f"<code>{html.escape(match.group(3))}</code>")
        else:
            href = html.escape(match.group(2), quote=True)
            out.append(f'<a href="{href}">{html.escape(match.group(1))}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_html(markdown: str) -> str:
    """A GitHub Markdown table (header, separator, rows) as an HTML table."""
    lines = [line for line in markdown.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return f"<pre>{html.escape(markdown)}</pre>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _cells(lines[0]))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(line)) + "</tr>"
        for line in lines[2:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_markdown(blocks: Sequence[Block]) -> str:
    """The page as Markdown: the blocks one after the other, a blank line between them."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f'<a id="{block.anchor}"></a>\n\n' if block.anchor else ""
            parts.append(f"{anchor}{'#' * block.level} {block.text}")
        elif isinstance(block, Para):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(block.markdown.strip())
        else:
            caption = " ".join(block.caption.split())
            alt = block.alt.replace("[", "\\[").replace("]", "\\]")
            parts.append(f"![{alt}]({block.src})\n\n*{caption}*")
    return "\n\n".join(parts) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1rem 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def render_html(blocks: Sequence[Block], *, title: str) -> str:
    """The page as one HTML document titled `title`, with its style sheet inline."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
            parts.append(f"<h{block.level}{anchor}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_inline_html(item)}</li>" for item in block.items)
            parts.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            parts.append(table_html(block.markdown))
        else:
            src, alt = html.escape(block.src, quote=True), html.escape(block.alt, quote=True)
            caption = "<br>".join(html.escape(line) for line in block.caption.splitlines())
            parts.append(
                f'<figure><a href="{src}"><img src="{src}" alt="{alt}"></a>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


# --- content ---


def _text_blocks(text: str) -> list[Block]:
    """Split the text of `epbench.views.tables.format_record` into tables (lines starting with
    `|`) and paragraphs (every other line)."""
    blocks: list[Block] = []
    table: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            blocks.append(Table(markdown="\n".join(table)))
            table = []
        if line.strip():
            blocks.append(Para(text=line))
    if table:
        blocks.append(Table(markdown="\n".join(table)))
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


def _anchor(i: int, record: Record) -> str:
    """GDU and training records have a section each; parity records share the parity table."""
    return "parity" if record.measurement == "parity" else f"run-{i + 1}"


def _links(indices: Sequence[int], records: Sequence[Record]) -> str:
    return ", ".join(
        f"[{records[i].cell} · {records[i].backend} · seed {records[i].seed}]"
        f"(#{_anchor(i, records[i])})"
        for i in indices
    )


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
    env_of: list[int]
    per_run: dict[int, Plot]  # the GDU curves of a record
    across: list[Plot]  # the figures across records
    fmt: str

    def indices(self, measurement: str) -> list[int]:
        return [i for i, r in enumerate(self.records) if r.measurement == measurement]


def _intro(page: _Page, envs: list[dict[str, Any]], notes: Sequence[str]) -> list[Block]:
    """The title, what the page holds and where it comes from, the contents."""
    records = page.records
    gdu, train, parity = (page.indices(m) for m in ("gdu", "train", "parity"))
    sources = sorted({r.file for r in records if r.file})
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # names only, not links: the page is often published without the (large) results folder
    source_names = ", ".join(f"`{Path(s).name}`" for s in sources)
    contents = [
        ("GDU runs", "gdu", gdu),
        ("Training runs", "training", train),
        *((title, anchor, [table]) for title, anchor, table in _measurement_tables(records)),
        ("Parity", "parity", parity),
        ("Figures across runs", "figures", page.across),
        ("Environments", "environments", envs),
        ("Not drawn", "notes", notes),
    ]
    return [
        Heading(level=1, text="epbench report"),
        Para(
            text=f"Records: {len(records)} ({len(gdu)} GDU, {len(train)} training, {len(parity)} "
            f"parity), from {source_names or 'records passed in'}; generated {stamp} by epbench "
            f"{__version__}. Each run links to its environment and figures; each figure lists "
            "the runs it shows."
        ),
        Para(text="Contents: " + " · ".join(f"[{t}](#{a})" for t, a, items in contents if items)),
    ]


def _run_section(page: _Page, i: int) -> list[Block]:
    """One record's section: heading, settings, environment, figures, its tables."""
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
    training = record.measurement == "train"
    if record.status in ("skipped", "failed") or (not training and record.status != "ok"):
        return [*blocks, Para(text=f"Reason: {record.reason}")]
    if training:  # per-epoch table, speed, memory, warm-up (and why it diverged)
        return blocks + _text_blocks(format_record(record))[1:]
    blocks.append(Table(markdown=layer_table(record)))
    blocks.extend(_text_blocks(format_record(record))[-1:])
    if i in page.per_run:
        blocks.extend(_image(page.per_run[i], page.fmt))
    return blocks


def _runs(page: _Page) -> list[Block]:
    """The GDU and the training sections: their tables, then one section per run."""
    blocks: list[Block] = []
    gdu, train = page.indices("gdu"), page.indices("train")
    if gdu:
        blocks.append(Heading(level=2, text="GDU runs", anchor="gdu"))
        blocks.append(Table(markdown=gdu_table([page.records[i] for i in gdu])))
        blocks.append(Para(text=f"Runs: {_links(gdu, page.records)}."))
        for i in gdu:
            blocks += _run_section(page, i)
    if train:
        chosen = [page.records[i] for i in train]
        blocks.append(Heading(level=2, text="Training runs", anchor="training"))
        blocks.append(Table(markdown=train_table(chosen)))
        blocks.append(Para(text="Over seeds (final epoch; EP − BPTT paired by seed):"))
        blocks.append(Table(markdown=seed_summary_table(chosen)))
        blocks.append(Para(text="Against the paper (docs/theory.md §5, Table 1):"))
        blocks.append(Table(markdown=paper_table(chosen)))
        blocks.append(Para(text=f"Runs: {_links(train, page.records)}."))
        for i in train:
            blocks += _run_section(page, i)
    return blocks


def _closing(page: _Page, envs: list[dict[str, Any]], notes: Sequence[str]) -> list[Block]:
    """The figures across runs, the environments and what was not drawn."""
    blocks: list[Block] = []
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
            blocks.append(Table(markdown=_env_table(env)))
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
) -> list[Block]:
    """The page: contents, overview tables, one section per run (its tables, its figures, a link
    to its environment), the figures across runs, the environments, and what was not drawn."""
    records = records_in(records)
    envs, env_of = environments(records)
    page = _Page(
        records=records,
        env_of=env_of,
        per_run={p.records[0]: p for p in plots if p.name.startswith("gdu-curves")},
        across=[p for p in plots if not p.name.startswith("gdu-curves")],
        fmt=fmt,
    )
    blocks = _intro(page, envs, notes) + _runs(page)
    for title, anchor, table in _measurement_tables(records):
        blocks += [Heading(level=2, text=title, anchor=anchor), Table(markdown=table)]
    parity = page.indices("parity")
    if parity:
        blocks.append(Heading(level=2, text="Parity", anchor="parity"))
        blocks.append(Table(markdown=parity_table([records[i] for i in parity])))
    return blocks + _closing(page, envs, notes)


def _measurement_tables(records: Sequence[Record]) -> list[tuple[str, str, str]]:
    """(title, anchor, Markdown table) of the speed, memory-vs-K, β-sweep, per-depth and RTRL
    tables, for the records that have them."""
    out = []
    for measurement, title, table in (
        ("speed", "Speed (one training step)", speed_table),
        ("memory", "Peak memory against K", memory_table),
        ("beta-sweep", "β sweep (error against BPTT)", sweep_table),
    ):
        chosen = [r for r in records if r.measurement == measurement]
        if chosen:
            out.append((title, measurement, table(chosen)))
    if has_depths(records):
        out.append(("By depth", "depth", depth_table(records)))
    if any(r.measurement == "rtrl" for r in records):
        out.append(("RTRL, BPTT and EP", "rtrl", rtrl_table(records)))
    return out


def _env_table(env: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = _flat("", env) if env else [("environment", "not recorded")]
    return tabulate(rows, headers=["key", "value"], tablefmt="github")


def _image(plot: Plot, fmt: str) -> list[Block]:
    return [Image(src=f"{plot.name}.{fmt}", alt=plot.title, caption=plot.caption)]


def write_report(records: Sequence[AnyRecord], *, out: Path, fmt: str = "png") -> dict[str, Any]:
    """Write the figures, `report.md` and `report.html` into `out`; returns their paths and the
    notes on what could not be drawn (including a missing matplotlib)."""
    records = usable(records)
    out = make_folder(Path(out))
    try:
        plots, notes = figures(records, checked=True)
        paths = save(plots, out, fmt=fmt)
    except MissingExtraError as err:
        plots, notes, paths = [], [f"figures: {err}"], []
    blocks = build_blocks(records, plots, notes, fmt=fmt)
    markdown, page = output_path(out, MARKDOWN), output_path(out, HTML)
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks, title="epbench report"), encoding="utf-8")
    return {"markdown": markdown, "html": page, "figures": paths, "notes": notes}
