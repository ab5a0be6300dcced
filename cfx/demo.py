"""The embedded default job: build a small CF-shaped dataset offline and curate it step by step.

Each step calls the library directly and reports the equivalent shell command, so the demo doubles as a
walkthrough of the CLI.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfx.errors import OutputError
from cfx.index import build_manifest, raise_for_bad
from cfx.manifest import write_atomic
from cfx.progress import NullReporter, Reporter
from cfx.sources import resolve_local
from cfx.stats import compute_stats, plot_stats


@dataclass
class DemoStep:
    title: str
    command: str
    summary: str
    outputs: list[str] = field(default_factory=list)


@dataclass
class DemoContext:
    out: Path
    reporter: Reporter
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> Path:
        return self.out / "dataset"


def _synth(ctx: DemoContext) -> DemoStep:
    from cfx.synth import make_dataset

    info = make_dataset(ctx.dataset, reporter=ctx.reporter)
    return DemoStep(
        "Build a CF-shaped dataset (offline)",
        f"cfx synth {ctx.dataset}",
        f"{info.n_rows} images in {len(info.shards)} single-row-group shards: {info.n_real} real, "
        f"{info.n_generated} generated, with injected duplicates and a generator licence table",
        [str(ctx.dataset)],
    )


def _index(ctx: DemoContext) -> DemoStep:
    result = build_manifest(resolve_local(str(ctx.dataset)), reporter=ctx.reporter)
    raise_for_bad(result, skip_bad=False)
    manifest = result.manifest.with_df(result.manifest.df, step=f"index {ctx.dataset}")
    path = ctx.out / "manifest.parquet"
    manifest.write(path)
    ctx.state["manifest"] = manifest
    ctx.state["manifest_path"] = path
    return DemoStep(
        "Index the shards (metadata only, no image bytes)",
        f"cfx index {ctx.dataset} -o {path}",
        f"{len(manifest)} rows from {len(manifest.shards)} shards",
        [str(path)],
    )


def _stats(ctx: DemoContext) -> DemoStep:
    stats = compute_stats(ctx.state["manifest"])
    path = ctx.out / "stats.json"
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=2)))
    plot = ctx.out / "stats.png"
    plot_stats(stats, str(plot))
    t = stats["totals"]
    fmt = {v["value"]: v for v in stats["breakdowns"]["format"]["values"]}
    return DemoStep(
        "Describe it",
        f"cfx stats {ctx.state['manifest_path']} --json --plot {plot}",
        f"{t['rows']} rows: {t['real']} real / {t['generated']} generated from {t['generators']} generators; "
        f"formats: " + ", ".join(f"{k} {v['rows']}" for k, v in fmt.items()),
        [str(path), str(plot)],
    )


def _dedupe(ctx: DemoContext) -> DemoStep:
    from cfx.dedupe import dedupe, write_report
    from cfx.gallery import write_gallery

    result = dedupe(ctx.state["manifest"], workers=2, reporter=ctx.reporter)
    folder = ctx.out / "dedupe"
    kept_path = ctx.out / "kept.parquet"
    result.kept.write(kept_path)
    write_report(result, folder)
    sheets = write_gallery(
        result.hashed,
        result.groups,
        folder / "gallery",
        threshold=result.summary["options"]["threshold"],
        max_sheets=6,
        reporter=ctx.reporter,
    )
    ctx.state["kept"] = result.kept
    ctx.state["kept_path"] = kept_path
    s = result.summary
    c = s["conflicts"]
    return DemoStep(
        "Remove duplicates (exact bytes + pHash), report label conflicts",
        f"cfx dedupe {ctx.state['manifest_path']} -o {kept_path} --report {folder} --gallery {folder / 'gallery'}",
        f"{s['exact_duplicates']} exact and {s['near_duplicates']} near duplicates in {s['groups']} groups, "
        f"{c['pairs']} label conflicts (same picture labelled real and generated, dropped); "
        f"{s['removed']} rows removed, {s['kept']} kept"
        + (f"; contact sheet: {sheets[0]}" if sheets else ""),
        [str(kept_path), str(folder), *(str(p) for p in sheets)],
    )


STEPS: list[Callable[[DemoContext], DemoStep]] = [_synth, _index, _stats, _dedupe]


def run_demo(out: Path, *, overwrite: bool = False, reporter: Reporter | None = None) -> Iterator[DemoStep]:
    """Run every demo step into ``out``, yielding each step's report as it finishes."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"{out} exists and is not empty", "pass --overwrite or pick another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, reporter=reporter or NullReporter())
    for step in STEPS:
        yield step(ctx)
