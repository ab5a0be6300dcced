"""Charts as inline SVG, drawn with matplotlib from the numbers in report.json (so page and JSON agree).

matplotlib is already a cfx dependency (``cfx stats --plot``); SVG keeps the page self-contained and sharp,
text stays text (``svg.fonttype: none``) and math parsing is off so a ``$`` in a generator name is shown as is.
Each chart gets its own id salt: several SVGs in one page must not share clip-path ids.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

REAL_COLOUR = "#2b6cb0"
GEN_COLOUR = "#dd6b20"
_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _svg(fig: Figure, salt: str) -> str:
    buf = io.StringIO()
    with rc_context({**_RC, "svg.hashsalt": salt}):  # type: ignore[arg-type,dict-item]
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    return (
        re.sub(r'id="([^"]+)"', lambda m: f'id="{salt}-{m.group(1)}"', svg)
        .replace("url(#", f"url(#{salt}-")
        .replace('xlink:href="#', f'xlink:href="#{salt}-')
        .replace(' href="#', f' href="#{salt}-')
    )


def chart(salt: str, width: float, height: float, draw: Callable[[Figure], None]) -> str:
    with rc_context(_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(width, height))
        draw(fig)
        return _svg(fig, salt)


def _short(text: str, n: int = 42) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def label_bars(
    salt: str, names: Sequence[str], real: Sequence[int], generated: Sequence[int], title: str
) -> str:
    """Horizontal stacked bars: real and generated rows per name."""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        y = list(range(len(names)))[::-1]
        if any(real):
            ax.barh(y, real, color=REAL_COLOUR, label="real")
        ax.barh(y, generated, left=real, color=GEN_COLOUR, label="generated")
        ax.set_yticks(y, [_short(n) for n in names])
        ax.set_xlabel("rows")
        ax.set_title(title, loc="left")
        ax.legend(frameon=False, fontsize=8)

    return chart(salt, 6.4, 0.6 + 0.24 * max(len(names), 2), draw)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        out.append(f"≥{lo:g}" if hi >= 1 << 29 else f"{lo:g}–{hi:g}")
    return out


def _paired(ax: Axes, labels: Sequence[str], real: Sequence[float], generated: Sequence[float]) -> None:
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], real, width=0.4, color=REAL_COLOUR, label="real")
    ax.bar([i + 0.2 for i in x], generated, width=0.4, color=GEN_COLOUR, label="generated")
    ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)


def histogram(salt: str, hist: dict[str, Any], title: str, xlabel: str) -> str:
    """Real and generated counts per bin, side by side."""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        _paired(ax, _bin_labels(hist["edges"]), hist["real"], hist["generated"])
        ax.set_title(title, loc="left")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rows")
        ax.legend(frameon=False, fontsize=8)

    return chart(salt, 4.6, 2.8, draw)


def small_multiples(salt: str, dists: list[dict[str, Any]]) -> str:
    """One small panel per audit feature: its real vs generated distribution (shares of each label)."""
    cols = 3
    nrows = max(1, -(-len(dists) // cols))

    def draw(fig: Figure) -> None:
        for i, d in enumerate(dists):
            ax = fig.add_subplot(nrows, cols, i + 1)
            labels = d["bins"]
            _paired(ax, labels, d["real_share"], d["generated_share"])
            if len(labels) > 12:
                ax.set_xticks([0, len(labels) - 1], [labels[0], labels[-1]], rotation=0, ha="center")
            ax.set_title(
                f"{d['feature']} — AUROC {d['auroc']:.3f}",
                loc="left",
                fontsize=8,
                color="#c53030" if d["flagged"] else "black",
            )
            ax.tick_params(labelsize=6)
        fig.tight_layout()

    return chart(salt, 9.0, 2.1 * nrows, draw)


def importances(salt: str, values: dict[str, float]) -> str:
    names = list(values)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        y = list(range(len(names)))[::-1]
        ax.barh(y, [values[n] for n in names], color="#4a5568")
        ax.set_yticks(y, names)
        ax.set_xlabel("AUROC lost when shuffled")
        ax.set_title("joint canary: permutation importance", loc="left")

    return chart(salt, 5.0, 0.6 + 0.24 * max(len(names), 2), draw)
