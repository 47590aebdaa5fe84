"""One self-contained report page (Markdown and HTML) from run records: tables, figures, the
environment of each run, and links between them.

What comes in: records (`epbench.core.records.read_records`), an output folder and an image format.
What goes out: `<out>/report.md`, `<out>/report.html` and the figures (`epbench.views.plots`) beside them,
referenced by relative paths, so the folder can be moved or published as a whole. Without
matplotlib the page still holds every table and says how to install the `plot` extra.

The page is built once as a list of blocks (heading, paragraph, table, image) and rendered to both
formats; tables are the `epbench.views.tables` views of the records (GitHub Markdown), converted to HTML
here. Anchors: `run-N` (record N, in file order), `fig-NAME` (a figure), `env-N` (an environment).
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

from epbench import __version__
from epbench.measurements.rtrl import rtrl_table
from epbench.views.pivot import depth_table, has_depths, sweep_table
from epbench.views.plots import MissingExtraError, Plot, batch_size, figures, save
from epbench.views.speed_tables import memory_table, speed_table
from epbench.views.tables import (
    format_record,
    layer_table,
    paper_table,
    parity_table,
    seed_summary_table,
    summary_table,
    train_table,
)

MARKDOWN, HTML = "report.md", "report.html"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Para:
    text: str  # inline Markdown: [text](href) links and `code` only


@dataclass(frozen=True)
class Table:
    markdown: str  # a GitHub Markdown table (tabulate's "github" format)


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]  # inline Markdown, like Para


@dataclass(frozen=True)
class Image:
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
    """Split the text of `epbench.views.tables.format_record` into tables (lines starting with `|`)
    and paragraphs (every other line)."""
    blocks: list[Block] = []
    table: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            blocks.append(Table("\n".join(table)))
            table = []
        if line.strip():
            blocks.append(Para(line))
    if table:
        blocks.append(Table("\n".join(table)))
    return blocks


def _heading(record: dict[str, Any]) -> str:
    return (
        f"{record.get('cell')} · {record.get('backend')} · {record.get('dtype')} · seed "
        f"{record.get('seed')} · preset {record.get('preset')} · {record.get('status')}"
    )


def _flat(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(f"{prefix}{k}.", v)]
    if isinstance(value, list):
        value = " ".join(map(str, value))
    return [(prefix.rstrip("."), str(value))]


def environments(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The distinct environments of the records and, per record, the index of its environment."""
    keys: dict[str, int] = {}
    distinct, index = [], []
    for record in records:
        env = record.get("environment") or {}
        key = json.dumps(env, sort_keys=True)
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append(env)
        index.append(keys[key])
    return distinct, index


def _anchor(i: int, record: dict[str, Any]) -> str:
    """GDU and training records have a section each; parity records share the parity table."""
    return "parity" if record.get("measurement") == "parity" else f"run-{i + 1}"


def _links(indices: Sequence[int], records: Sequence[dict[str, Any]]) -> str:
    return ", ".join(
        f"[{records[i].get('cell')} · {records[i].get('backend')} · seed "
        f"{records[i].get('seed')}](#{_anchor(i, records[i])})"
        for i in indices
    )


def _settings(record: dict[str, Any]) -> str:
    config = record.get("config") or {}
    dyn, data, model = config.get("dynamics", {}), config.get("data", {}), config.get("model", {})
    parts = [
        f"model {model.get('setting')} {model.get('activation')} sizes {model.get('sizes')}"
        + (f", conv {model['conv']}" if model.get("conv") else ""),
        f"β = {record.get('beta_used')} ({record.get('estimator')})",
        f"T = {dyn.get('T')}, K = {dyn.get('K')}",
        f"data {data.get('source')}, batch {batch_size(record)}",
        f"device {record.get('device')}",
        f"config hash `{record.get('config_hash')}`",
    ]
    return "; ".join(parts)


def build_blocks(
    records: Sequence[dict[str, Any]],
    plots: Sequence[Plot],
    notes: Sequence[str],
    *,
    fmt: str,
) -> list[Block]:
    """The page: contents, overview tables, one section per run (its tables, its figures, a link
    to its environment), the figures across runs, the environments, and what was not drawn."""
    envs, env_of = environments(records)
    gdu = [i for i, r in enumerate(records) if r.get("measurement", "gdu") == "gdu"]
    train = [i for i, r in enumerate(records) if r.get("measurement") == "train"]
    parity = [i for i, r in enumerate(records) if r.get("measurement") == "parity"]
    per_run = {p.records[0]: p for p in plots if p.name.startswith("gdu-curves")}
    across = [p for p in plots if not p.name.startswith("gdu-curves")]
    sources = sorted({r["_file"] for r in records if r.get("_file")})
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    blocks: list[Block] = [Heading(1, "epbench report")]
    # names only, not links: the page is often published without the (large) results folder
    source_names = ", ".join(f"`{Path(s).name}`" for s in sources)
    blocks.append(
        Para(
            f"Records: {len(records)} ({len(gdu)} GDU, {len(train)} training, {len(parity)} "
            f"parity), from {source_names or 'records passed in'}; generated {stamp} by epbench "
            f"{__version__}. Each run links to its environment and figures; each figure lists "
            "the runs it shows."
        )
    )
    contents = [
        ("GDU runs", "gdu", gdu),
        ("Training runs", "training", train),
        *((title, anchor, [table]) for title, anchor, table in _measurement_tables(records)),
        ("Parity", "parity", parity),
        ("Figures across runs", "figures", across),
        ("Environments", "environments", envs),
        ("Not drawn", "notes", notes),
    ]
    blocks.append(
        Para("Contents: " + " · ".join(f"[{t}](#{a})" for t, a, items in contents if items))
    )

    def figure_links(i: int) -> str:
        shown = [p for p in across if i in p.records]
        return ", ".join(f"[{p.title}](#fig-{p.name})" for p in shown)

    def run_section(i: int) -> None:
        record = records[i]
        blocks.append(Heading(3, _heading(record), f"run-{i + 1}"))
        where = record.get("_file")
        source = f" Source: `{Path(where).name}`." if where else ""
        also = figure_links(i)
        blocks.append(
            Para(
                f"{_settings(record)}. Environment: [environment {env_of[i] + 1}]"
                f"(#env-{env_of[i] + 1}).{source}" + (f" Figures: {also}." if also else "")
            )
        )
        training = record.get("measurement") == "train"
        if record.get("status") in ("skipped", "failed") or (
            not training and record.get("status") != "ok"
        ):
            blocks.append(Para(f"Reason: {record.get('reason')}"))
            return
        if training:  # per-epoch table, speed, memory, warm-up (and why it diverged)
            blocks.extend(_text_blocks(format_record(record))[1:])
            return
        blocks.append(Table(layer_table(record)))
        blocks.extend(_text_blocks(format_record(record))[-1:])
        if i in per_run:
            blocks.extend(_image(per_run[i], fmt))

    if gdu:
        blocks.append(Heading(2, "GDU runs", "gdu"))
        blocks.append(Table(summary_table([records[i] for i in gdu])))
        blocks.append(Para(f"Runs: {_links(gdu, records)}."))
        for i in gdu:
            run_section(i)
    if train:
        chosen = [records[i] for i in train]
        blocks.append(Heading(2, "Training runs", "training"))
        blocks.append(Table(train_table(chosen)))
        blocks.append(Para("Over seeds (final epoch; EP − BPTT paired by seed):"))
        blocks.append(Table(seed_summary_table(chosen)))
        blocks.append(Para("Against the paper (PAPER.md §5, Table 1):"))
        blocks.append(Table(paper_table(chosen)))
        blocks.append(Para(f"Runs: {_links(train, records)}."))
        for i in train:
            run_section(i)
    measured = _measurement_tables(records)
    for title, anchor, table in measured:
        blocks.append(Heading(2, title, anchor))
        blocks.append(Table(table))
    if parity:
        blocks.append(Heading(2, "Parity", "parity"))
        blocks.append(Table(parity_table([records[i] for i in parity])))
    if across:
        blocks.append(Heading(2, "Figures across runs", "figures"))
        for plot in across:
            blocks.append(Heading(3, plot.title, f"fig-{plot.name}"))
            blocks.extend(_image(plot, fmt))
            blocks.append(Para(f"Runs shown: {_links(plot.records, records)}."))
    if envs:
        blocks.append(Heading(2, "Environments", "environments"))
        for k, env in enumerate(envs):
            runs = [i for i, e in enumerate(env_of) if e == k]
            blocks.append(Heading(3, f"Environment {k + 1}", f"env-{k + 1}"))
            blocks.append(Table(_env_table(env)))
            blocks.append(Para(f"Runs: {_links(runs, records)}."))
    if notes:
        blocks.append(Heading(2, "Not drawn", "notes"))
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _measurement_tables(records: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(title, anchor, Markdown table) of the speed, memory-vs-K, β-sweep and per-depth tables,
    for the records that have them (epbench.views.speed_tables, epbench.views.pivot)."""
    records = list(records)
    out = []
    speed = [r for r in records if r.get("measurement") == "speed"]
    memory = [r for r in records if r.get("measurement") == "memory"]
    sweeps = [r for r in records if r.get("measurement") == "beta-sweep"]
    if speed:
        out.append(("Speed (one training step)", "speed", speed_table(speed)))
    if memory:
        out.append(("Peak memory against K", "memory", memory_table(memory)))
    if sweeps:
        out.append(("β sweep (error against BPTT)", "beta-sweep", sweep_table(sweeps)))
    if has_depths(records):
        out.append(("By depth", "depth", depth_table(records)))
    if any(r.get("measurement") == "rtrl" for r in records):
        out.append(("RTRL, BPTT and EP", "rtrl", rtrl_table(list(records))))
    return out


def _env_table(env: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = _flat("", env) if env else [("environment", "not recorded")]
    return tabulate(rows, headers=["key", "value"], tablefmt="github")


def _image(plot: Plot, fmt: str) -> list[Block]:
    return [Image(f"{plot.name}.{fmt}", plot.title, plot.caption)]


def write_report(
    records: Sequence[dict[str, Any]], *, out: Path, fmt: str = "png"
) -> dict[str, Any]:
    """Write the figures, `report.md` and `report.html` into `out`; returns their paths and the
    notes on what could not be drawn (including a missing matplotlib)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        plots, notes = figures(records)
        paths = save(plots, out, fmt=fmt)
    except MissingExtraError as err:
        plots, notes, paths = [], [f"figures: {err}"], []
    blocks = build_blocks(records, plots, notes, fmt=fmt)
    markdown, page = out / MARKDOWN, out / HTML
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks, title="epbench report"), encoding="utf-8")
    return {"markdown": markdown, "html": page, "figures": paths, "notes": notes}
