"""`cfx inspect`: byte facts of every image (JPEG quality, subsampling, metadata, real format and size)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    NO_SELECTION,
    EngineOpt,
    JsonOpt,
    OutputOpt,
    RayAddressOpt,
    SeedOpt,
    SelectionOptions,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
)
from cfx.cli._output import (
    CliReporter,
    emit_outcome,
)
from cfx.cli._select import load_selected, with_selection_options


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("value")
    table.add_column("rows", justify="right")
    for value, n in list(counts.items())[:20]:
        table.add_row(str(value), f"{n:,}")
    return table


def _quality_table(hist: dict[str, dict[int, int]]) -> Table:
    """JPEG quality per label, in bins of 5 (the bins `balance --match jpeg-quality:5` uses)."""
    table = Table(title="JPEG quality by label (bins of 5)", title_justify="left")
    for name, justify in (("quality", "left"), ("real", "right"), ("generated", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    bins: dict[int, list[int]] = {}
    for i, label in enumerate(("real", "generated")):
        for q, n in hist[label].items():
            bins.setdefault((int(q) - 1) // 5, [0, 0])[i] += n
    for b in sorted(bins, reverse=True):
        table.add_row(f"{5 * b + 1}-{5 * b + 5}", f"{bins[b][0]:,}", f"{bins[b][1]:,}")
    return table


def render(s: dict[str, Any], console: Console) -> None:
    head = Table(title=f"cfx inspect — {s['rows']:,} rows", show_header=False, title_justify="left")
    head.add_column("what")
    head.add_column("value", justify="right")
    m = s["mismatches"]
    for name, value in (
        ("read now / from cache", f"{s['read_now']:,} / {s['from_cache']:,}"),
        ("unreadable images (inspect_error)", f"{s['inspect_errors']:,}"),
        ("format / size / mode mismatches", f"{m['format']:,} / {m['size']:,} / {m['mode']:,}"),
        (
            "with EXIF / GPS / ICC / C2PA",
            f"{s['has_exif']:,} / {s['has_gps']:,} / {s['has_icc']:,} / {s['has_c2pa']:,}",
        ),
        ("progressive JPEG", f"{s['progressive']:,}"),
    ):
        head.add_row(name, value)
    console.print(head)
    console.print(_counts_table("actual format", s["actual_format"]))
    if any(s["jpeg_quality"].values()):
        console.print(_quality_table(s["jpeg_quality"]))
        console.print(_counts_table("chroma subsampling", s["chroma_subsampling"]))
    if s["text_chunks"]:
        console.print(_counts_table("PNG text chunk keys", s["text_chunks"]))
    for source, order in s["resolution_order"].items():
        console.print(
            f"{source}: resolution is written {order} (height first); compared transposed, and `cfx index` "
            "now reads it that way",
            markup=False,
        )
    if "pixels" in s:
        _render_pixels(s["pixels"], console)
    if s["has_gps"]:
        console.print(
            f"{s['has_gps']:,} image(s) carry GPS coordinates in EXIF: strip them before sharing",
            markup=False,
        )


def _render_pixels(p: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"pixel facts — median by label ({p['decoded_now']:,} decoded now, {p['pixel_errors']:,} "
        "undecodable)",
        title_justify="left",
    )
    for name, justify in (("fact", "left"), ("real", "right"), ("generated", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    real, gen = p["median"]["real"], p["median"]["generated"]
    for fact in real:
        table.add_row(fact, *("-" if v is None else f"{v:.4g}" for v in (real[fact], gen[fact])))
    console.print(table)
    console.print(_counts_table("dims multiple of", p["dims_multiple_of"]))
    if p["qtable_id"]:
        console.print(_counts_table("JPEG quantisation tables (qtable_id)", p["qtable_id"]))
    if p["exif_software"]:
        console.print(_counts_table("EXIF software", p["exif_software"]))


@handle_errors
@with_selection_options()
def inspect_cmd(
    source: SourceArg,
    output: OutputOpt = None,
    select: SelectionOptions = NO_SELECTION,
    seed: SeedOpt = 0,
    hashes: Annotated[
        bool,
        typer.Option(
            "--hashes",
            help="Also compute the dedupe hashes in the same read of the bytes (a later `cfx dedupe` "
            "then reads nothing; costs a pixel decode per image).",
        ),
    ] = False,
    pixels: Annotated[
        bool,
        typer.Option(
            "--pixels",
            help="Also add pixel facts (luma, saturation, colorfulness, entropy, sharpness, noise_sigma, "
            "hf_energy, blockiness, dims_multiple_of, qtable_id, exif_software, pixel_error) from one decode "
            "per image (the dedupe hashes come from the same decode; cached, so after `cfx dedupe` nothing "
            "is decoded).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ignore and do not update the byte-facts cache.")
    ] = False,
    workers: WorkersOpt = 2,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Read each image's headers (no pixel decode) and add byte facts: actual_format, jpeg_quality
    (+ jpeg_quality_exact), chroma_subsampling, progressive, bit_depth, has_exif, has_gps, has_icc,
    has_c2pa, text_chunks, header size/mode, inspect_error, and format/size/mode mismatches against the
    declared columns.

    Facts are cached per shard (a re-run, or an inspect after `cfx dedupe`, reads no image bytes). The
    manifest goes to -o, or as Arrow IPC to stdout when piped; the summary then goes to stderr. A source
    whose resolution column is written [h, w] is reported once and `cfx index` uses that order from then on.

    Examples:

    \b
      cfx inspect data/ -o inspected.parquet
      cfx inspect manifest.parquet --labels real --json
      cfx inspect data/ --hashes | cfx dedupe - -o kept.parquet
      cfx inspect data/ --pixels -o pixels.parquet
      cfx inspect data/ | cfx stats - --by jpeg_quality
      cfx inspect /shared/cf/ --engine ray -o inspected.parquet
    """
    from cfx.engine_ray import open_engine
    from cfx.inspect import inspect_manifest, summarize

    with open_engine(engine, ray_address) as eng, CliReporter() as reporter:
        manifest, _ = load_selected(
            source, select, seed, {"-o": output}, reporter, token=token, skip_bad=skip_bad, workers=workers
        )
        result = inspect_manifest(
            manifest,
            workers=workers,
            use_cache=not no_cache,
            with_hashes=hashes,
            with_pixels=pixels,
            skip_bad=skip_bad,
            reporter=reporter,
            engine=eng,
        )
    summary = summarize(result)
    emit_outcome(result.manifest, output, summary, render, as_json=as_json, what="inspected manifest")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
