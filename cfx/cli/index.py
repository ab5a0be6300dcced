"""`cfx index`: build and save the manifest of a dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    EngineOpt,
    OutputOpt,
    RayAddressOpt,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
)
from cfx.cli._output import CliReporter, emit_manifest, refuse_clobber
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
    workers: WorkersOpt = 4,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Build the manifest of SOURCE: one row per image, metadata only (no image bytes are read).

    Examples:

    \b
      cfx index data/ -o manifest.parquet
      cfx index hf://datasets/OwensLab/CommunityForensics-Small -o cf-small.parquet
      cfx index data/ | cfx stats -
      cfx index /shared/cf/ --engine ray --ray-address 10.0.0.5:6379 -o cf.parquet
    """
    from cfx.engine_ray import open_engine
    from cfx.index import build_manifest, raise_for_bad
    from cfx.sources import resolve

    src = resolve(source, token=token)
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


def register(app: typer.Typer) -> None:
    app.command("index")(index)
