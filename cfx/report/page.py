"""index.html from a Jinja2 template (autoescaped: every name from the data is escaped), charts inline.

Every number on the page is written by ``num(path)``: a ``<span data-k="path">`` holding the value at that
path of report.json, so a test (or a reader) can check each one against the JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

import cfx.report.charts as charts

if TYPE_CHECKING:
    from cfx.report.gathered import Gathered


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (list items by index) of report.json's content."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def format_number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def _environment(report: dict[str, Any]) -> Environment:
    env = Environment(
        loader=PackageLoader("cfx.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def num(path: str) -> Markup:
        value = format_number(lookup(report, path))
        return Markup('<span class="n" data-k="{}">{}</span>').format(path, value)

    env.globals["num"] = num
    env.tests["length_one"] = lambda bins: len(bins) <= 1
    env.filters["fmt"] = format_number
    return env


def _composition_charts(comp: dict[str, Any], key: str) -> dict[str, str]:
    out = {}
    arch = comp["label_by_architecture"]
    out["architecture"] = charts.label_bars(
        f"{key}-arch", [a["architecture"] for a in arch], [a["real"] for a in arch],
        [a["generated"] for a in arch], "rows by architecture and label",
    )  # fmt: skip
    top = comp["top_generators"]
    if top:
        out["generators"] = charts.label_bars(
            f"{key}-gen", [g["value"] for g in top], [0] * len(top), [g["rows"] for g in top],
            f"top {len(top)} generators (generated rows)",
        )  # fmt: skip
    for name, title, xlabel in (
        ("min_side", "min(width, height) per label", "pixels"),
        ("file_size_kb", "file size per label", "kB"),
        ("jpeg_quality", "JPEG quality per label (JPEG rows)", "quality"),
    ):
        if comp[name] is not None:
            out[name] = charts.histogram(f"{key}-{name}", comp[name], title, xlabel)
    return out


def _charts(report: dict[str, Any]) -> dict[str, Any]:
    comp = report["composition"]
    out: dict[str, Any] = {"overall": _composition_charts(comp["overall"], "all"), "splits": []}
    for i, c in enumerate(comp["splits"] or []):
        out["splits"].append(_composition_charts(c, f"s{i}"))
    audit = report["audit"]
    shown = [d for d in audit.get("distributions", []) if len(d["bins"]) > 1]
    if shown:
        out["audit"] = charts.small_multiples("audit", shown)
    joint = audit.get("joint")
    if joint and joint.get("importances"):
        out["importances"] = charts.importances("imp", joint["importances"])
    return out


def render_page(g: Gathered, browse: list[dict[str, Any]]) -> str:
    report = g.report
    env = _environment(report)
    template = env.get_template("index.html.j2")
    return template.render(
        r=report,
        charts=_charts(report),
        browse=browse,
        thumbs_a=g.thumbs.get("a", {}),
        thumbs_b=g.thumbs.get("b", {}),
        escape=escape,
    )
