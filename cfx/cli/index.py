"""`cfx index`: build and save the manifest of a dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    EngineOpt,
    JsonOpt,
    OutputOpt,
    RayAddressOpt,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
)

if TYPE_CHECKING:
    from cfx.sources import DatasetSource

from cfx.cli._output import CliReporter, emit_manifest, out_console, print_json, refuse_clobber
from cfx.lineage import note_input


@handle_errors
def index(
    source: SourceArg,
    output: OutputOpt = None,
    num_bytes: Annotated[
        bool,
        typer.Option(
            "--num-bytes",
            help="Also measure each image's encoded size (streams the image column; local only).",
        ),
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ignore and do not update the index cache.")
    ] = False,
    layout: Annotated[
        bool,
        typer.Option(
            "--layout",
            help="Show each shard's physical layout instead (row groups, pages of the image column, largest "
            "page, codec, page index): why a read costs what it costs. Reads only footers and page headers.",
        ),
    ] = False,
    workers: WorkersOpt = 4,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the manifest of SOURCE: one row per image, metadata only (no image bytes are read).

    Examples:

    \b
      cfx index data/ -o manifest.parquet
      cfx index hf://datasets/OwensLab/CommunityForensics-Small -o cf-small.parquet
      cfx index data/ | cfx stats -
      cfx index /shared/cf/ --engine ray --ray-address 10.0.0.5:6379 -o cf.parquet
      cfx index hf://datasets/OwensLab/CommunityForensics-Eval --layout
    """
    from cfx.engine_ray import open_engine
    from cfx.index import build_manifest, raise_for_bad
    from cfx.sources import resolve

    src = resolve(source, token=token)
    if layout:
        _show_layout(src, as_json)
        return
    shard_files = [] if src.is_remote else [ref.path for ref in src.shards]
    refuse_clobber(source, None, {"-o": output}, extra_inputs=shard_files)
    with open_engine(engine, ray_address) as eng, CliReporter() as reporter:
        result = build_manifest(
            src,
            with_num_bytes=num_bytes,
            workers=workers,
            use_cache=not no_cache,
            engine=eng,
            reporter=reporter,
        )
    raise_for_bad(result, skip_bad, reporter)
    note_input(source, result.manifest)
    emit_manifest(result.manifest.with_df(result.manifest.df, step=f"index {source}"), output)


def _show_layout(src: DatasetSource, as_json: bool) -> None:
    """One line per shard (or JSON): rows, row groups, pages of the image column, largest page, codec."""
    from cfx.stream import shard_layout
    from cfx.units import human_bytes

    found = [(ref.rel, shard_layout(ref, src.fs)) for ref in src.shards]
    if as_json:
        print_json([{"shard": rel, **lay.as_dict()} for rel, lay in found])
        return
    from rich.table import Table

    table = Table(
        "shard", "rows", "row groups", "pages", "largest page", "codec", "encodings", "page index", "reader"
    )
    for rel, lay in found:
        groups = f"{lay.row_groups}" + (
            f" × {lay.rows_per_group[0]:,} rows" if len(set(lay.rows_per_group)) == 1 else ""
        )
        table.add_row(
            rel,
            f"{lay.rows:,}",
            groups,
            f"{lay.pages:,}" + (f" ({lay.dictionary_pages} dictionary)" if lay.dictionary_pages else ""),
            f"{human_bytes(lay.largest_page)} ({lay.largest_page_rows:,} images)",
            lay.codec,
            ", ".join(f"{k} {v}" for k, v in lay.encodings.items()),
            "yes" if lay.page_index else "no",
            lay.reader,
        )
    out_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
