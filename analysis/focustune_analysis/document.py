"""A report as a list of blocks, rendered to Markdown (figures as linked PNGs) and to one
self-contained HTML page (figures embedded), so the same content reads well in a terminal
pager, on GitHub and in MLflow's artifact viewer; and single tables as LaTeX tabulars."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f2f2f2}img{max-width:100%;margin:0.4em 0}h2{border-bottom:1px solid #ddd;
margin-top:2em}li{margin:0.25em 0}.caption{color:#555;font-size:13px;margin-top:0}"""


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("bullets", list(items)))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", (path, caption)))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if rows:
            self.blocks.append(("table", (list(columns), [list(map(str, r)) for r in rows])))

    def headings(self) -> list[str]:
        return [text for kind, value in self.blocks if kind == "heading" for _, text in [value]]

    def to_markdown(self, root: Path) -> str:
        """Markdown with figure paths relative to ``root`` (the report's folder)."""
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out += ["#" * level + " " + text, ""]
            elif kind == "paragraph":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "figure":
                path, caption = value
                out += [f"![{caption}]({path.relative_to(root).as_posix()})", "", f"*{caption}*", ""]
            elif kind == "table":
                columns, rows = value
                cell = lambda text: text.replace("|", "\\|")  # noqa: E731
                out += ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
                out += ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]
        return "\n".join(out)

    def to_html(self) -> str:
        """One HTML page; figures embedded as base64 PNG."""
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
               f"<style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out.append(f"<h{level}>{_inline(text)}</h{level}>")
            elif kind == "paragraph":
                out.append(f"<p>{_inline(value)}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in value) + "</ul>")
            elif kind == "figure":
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                out.append(f"<img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                           f"<p class='caption'>{_inline(caption)}</p>")
            elif kind == "table":
                columns, rows = value
                head = "".join(f"<th>{_inline(c)}</th>" for c in columns)
                body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                out.append(f"<table><tr>{head}</tr>{body}</table>")
        out.append("</body></html>")
        return "\n".join(out)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def latex_tabular(columns: Sequence[str], rows: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]],
                  comments: Sequence[str] = ()) -> str:
    """A booktabs ``tabular`` (first column left-aligned, the others centred), cells escaped, the
    cells marked in ``bold`` set in bold; ``comments`` as ``%`` lines above it."""
    def cell(text: str, strong: bool = False) -> str:
        text = "".join(LATEX_SPECIAL.get(char, char) for char in text)
        return rf"\textbf{{{text}}}" if strong else text

    lines = [f"% {comment}" for comment in comments]
    lines += [r"\begin{tabular}{l" + "c" * (len(columns) - 1) + "}", r"\toprule",
              " & ".join(map(cell, columns)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(cell, row, marks)) + r" \\" for row, marks in zip(rows, bold)]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}", ""])


def _inline(text: str) -> str:
    """Escape, then the two Markdown inline forms the report uses: **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
