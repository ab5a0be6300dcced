"""Contact sheets of duplicate groups: people judge duplicates by looking.

One PNG per chosen group (the largest, the most uncertain — member distance closest to the threshold —
and label conflicts): a thumbnail per member, captioned with shard:row, label, generator or source, its
distance to the survivor and whether it is kept.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image, ImageDraw, ImageFont

from cfx.manifest import Manifest
from cfx.outputs import atomic_folder, write_atomic
from cfx.progress import NullReporter, Reporter
from cfx.schema import LABEL_NAMES
from cfx.stream import ROW_COLUMN, iter_shard_batches, rows_by_shard

THUMB = 200
CAPTION_LINES = 4
LINE = 17
PAD = 10
COLUMNS = 4
MIN_WIDTH = 660  # room for the title line
_KEEP = (30, 130, 60)
_DROP = (190, 40, 40)
_REVIEW = (200, 120, 0)


def choose_groups(groups: pl.DataFrame, threshold: int, max_sheets: int = 12) -> list[tuple[int, str]]:
    """(group id, why shown): label conflicts, then the largest and the most uncertain groups."""
    if groups.is_empty():
        return []
    per = groups.group_by("group_id").agg(
        pl.len().alias("size"),
        pl.col("distance").max().alias("max_d"),
        pl.col("conflict").any().alias("conflict"),
    )
    picks: list[tuple[int, str]] = []
    seen: set[int] = set()

    def take(frame: pl.DataFrame, why: str, k: int) -> None:
        for gid in frame.get_column("group_id").to_list()[:k]:
            if gid not in seen and len(picks) < max_sheets:
                seen.add(gid)
                picks.append((int(gid), why))

    quota = max(1, max_sheets // 3)
    take(
        per.filter(pl.col("conflict")).sort(["size", "group_id"], descending=[True, False]),
        "label conflict",
        quota,
    )
    take(per.sort(["size", "group_id"], descending=[True, False]), "largest", quota)
    uncertain = per.filter(pl.col("max_d") > 0).with_columns(
        (threshold - pl.col("max_d").cast(pl.Int64)).alias("margin")
    )
    take(uncertain.sort(["margin", "group_id"]), "most uncertain", quota)
    take(per.sort(["size", "group_id"], descending=[True, False]), "largest", max_sheets)
    return picks


def _fetch(
    manifest: Manifest, keys: list[tuple[str, int]], size: int
) -> dict[tuple[str, int], Image.Image | str]:
    """Thumbnails of the given rows (or an error text), streaming only those rows' bytes."""
    want = pl.DataFrame(
        {"shard": [k[0] for k in keys], "row": [k[1] for k in keys]},
        schema={"shard": pl.String, "row": pl.Int64},
    )
    sub = manifest.with_df(want)
    out: dict[tuple[str, int], Image.Image | str] = {}
    for part in rows_by_shard(sub):
        for batch in iter_shard_batches(sub, part.shard, part.rows):
            for row, data in zip(
                batch.column(ROW_COLUMN).to_pylist(), batch.column(0).to_pylist(), strict=True
            ):
                if not data:
                    out[(part.shard, row)] = "no image data" if data is None else "empty image data"
                    continue
                try:
                    src = Image.open(io.BytesIO(data))
                    src.draft("RGB", (size, size))
                    img = src.convert("RGB")
                    img.thumbnail((size, size), Image.Resampling.LANCZOS)
                    out[(part.shard, row)] = img
                except Exception as exc:
                    out[(part.shard, row)] = f"undecodable: {type(exc).__name__}"
    return out


def _short(text: str, font: Any, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def render_sheet(
    members: list[dict[str, Any]], thumbs: dict[tuple[str, int], Image.Image | str], title: str
) -> Image.Image:
    font = ImageFont.load_default(size=13)
    bold = ImageFont.load_default(size=15)
    cols = min(COLUMNS, max(1, len(members)))
    rows = (len(members) + cols - 1) // cols
    cell_w, cell_h = THUMB + PAD, THUMB + CAPTION_LINES * LINE + PAD * 2
    head = 2 * LINE + PAD * 2
    sheet = Image.new("RGB", (max(cols * cell_w + PAD, MIN_WIDTH), head + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(title.split("\n")[:2]):
        draw.text((PAD, PAD + i * LINE), _short(line, bold, sheet.width - 2 * PAD), fill="black", font=bold)
    for k, m in enumerate(members):
        x0 = PAD + (k % cols) * cell_w
        y0 = head + (k // cols) * cell_h
        thumb = thumbs.get((m["shard"], m["row"]), "missing")
        colour = _KEEP if m["action"] == "keep" else _DROP
        if m["conflict"] and m["action"] == "keep":
            colour = _REVIEW
        draw.rectangle([x0 - 3, y0 - 3, x0 + THUMB + 2, y0 + THUMB + 2], outline=colour, width=3)
        if isinstance(thumb, Image.Image):
            sheet.paste(thumb, (x0 + (THUMB - thumb.width) // 2, y0 + (THUMB - thumb.height) // 2))
        else:
            draw.rectangle([x0, y0, x0 + THUMB - 1, y0 + THUMB - 1], fill=(235, 235, 235))
            draw.text((x0 + 6, y0 + THUMB // 2), _short(thumb, font, THUMB - 12), fill="black", font=font)
        label = LABEL_NAMES.get(m["label"], "?") if m["label"] is not None else "?"
        who = m.get("model_name") or m.get("real_source") or ""
        status = m.get("status") or ("KEEP" if m["action"] == "keep" else "DROP")
        kind = "survivor" if m["survivor"] else f"{m['kind']}, d={m['distance']}"
        if m["survivor"] and m["action"] != "keep":
            kind = "first of group"
        lines = [
            (f"{status} · {kind}", colour),
            (f"{Path(m['shard']).stem}:{m['row']}", (0, 0, 0)),
            (label, (0, 0, 0)),
            (who, (80, 80, 80)),
        ]
        for j, (text, fill) in enumerate(lines):
            draw.text((x0, y0 + THUMB + 6 + j * LINE), _short(text, font, THUMB), fill=fill, font=font)
    return sheet


def write_gallery(
    manifest: Manifest,
    groups: pl.DataFrame,
    folder: Path,
    *,
    threshold: int,
    max_sheets: int = 12,
    max_members: int = 12,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> list[Path]:
    """Write one contact sheet per chosen group into ``folder``; returns the paths, best first.

    The folder is built aside and renamed into place (``cfx.outputs.atomic_folder``): it appears complete,
    and an earlier gallery there (only with ``overwrite``) is replaced as a whole, stale sheets included.
    """
    reporter = reporter or NullReporter()
    folder = Path(folder)
    picks = choose_groups(groups, threshold, max_sheets)
    with atomic_folder(folder, overwrite=overwrite, option="--gallery", warn=reporter.warn) as tmp:
        names = _draw_sheets(manifest, groups, picks, tmp, threshold, max_members, reporter)
    return [folder / name for name in names]


def _draw_sheets(
    manifest: Manifest,
    groups: pl.DataFrame,
    picks: list[tuple[int, str]],
    folder: Path,
    threshold: int,
    max_members: int,
    reporter: Reporter,
) -> list[str]:
    if not picks:
        return []
    chosen = groups.filter(pl.col("group_id").is_in([p[0] for p in picks]))
    extra = [c for c in ("real_source",) if c in manifest.df.columns]
    if extra:
        chosen = chosen.join(manifest.df.select("shard", "row", *extra), on=["shard", "row"], how="left")
    by_group = {
        int(gid): part.head(max_members).to_dicts()
        for (gid,), part in chosen.group_by("group_id", maintain_order=True)
    }
    keys = sorted({(m["shard"], m["row"]) for ms in by_group.values() for m in ms})
    thumbs = _fetch(manifest, keys, THUMB)
    task = reporter.task("Drawing contact sheets", total=len(picks))
    paths = []
    for gid, why in picks:
        members = by_group[gid]
        size = int(groups.filter(pl.col("group_id") == gid).height)
        max_d = max(int(m["distance"]) for m in members)
        title = (
            f"group {gid} · {why}: {size} rows, max distance {max_d} (threshold {threshold})"
            + (f", showing {len(members)}" if size > len(members) else "")
            + f"\n{members[0]['reason'] if members[0]['conflict'] else 'green = kept, red = removed'}"
        )
        sheet = render_sheet(members, thumbs, title)
        name = f"group-{gid:06d}.png"
        write_atomic(folder / name, functools.partial(_save_png, sheet))
        paths.append(name)
        task.advance()
    task.close()
    return paths


def _save_png(sheet: Image.Image, path: str) -> None:
    sheet.save(path, format="PNG")


__all__ = ["choose_groups", "render_sheet", "write_gallery"]
