"""`cfx synth`: write a synthetic CF-shaped dataset (demo set, scale replica or one large shard)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

import cfx.cli._output as _output
from cfx.cli._errors import handle_errors
from cfx.cli._options import JsonOpt, SeedOpt, ranged
from cfx.errors import OutputError, UsageError
from cfx.units import human_bytes, parse_size


class ResolutionType(str, Enum):
    list = "list"
    string = "string"


class Mode(str, Enum):
    small = "small"
    scale = "scale"
    large = "large"


def _check_output(directory: Path, overwrite: bool) -> None:
    data = directory / "data"
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} exists and is not a folder", "choose another DIR")
    if data.is_dir() and any(data.iterdir()) and not overwrite:
        raise OutputError(
            f"{data} is not empty", "pass --overwrite to replace the generated files, or choose another DIR"
        )


@handle_errors
def synth(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Folder to write into (created if missing).", show_default=False),
    ],
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            help="small: realistic demo set with injected duplicates; scale: the real 186-shard layout "
            "(556,541 rows, tiny images); large: one shard above --large-bytes in one row group.",
        ),
    ] = Mode.small,
    shards: Annotated[
        int | None, ranged("--shards", lo=1, hi=100_000, help="Number of shards (small: 6, scale: 186).")
    ] = None,
    rows_per_shard: Annotated[
        int | None,
        ranged("--rows-per-shard", lo=1, hi=1_000_000, help="Rows per shard (small only; default 60)."),
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option(
            "--scale", help="Multiply all image sizes, e.g. 0.25 for quick tests (small only; default 1)."
        ),
    ] = None,
    seed: SeedOpt = 0,
    no_duplicates: Annotated[
        bool, typer.Option("--no-duplicates", help="Do not inject duplicates (small only).")
    ] = False,
    large_bytes: Annotated[
        str | None,
        typer.Option(
            "--large-bytes",
            metavar="SIZE",
            help="Minimum shard size for --mode large, e.g. 30MB (default 1.1GB).",
        ),
    ] = None,
    resolution_type: Annotated[
        ResolutionType,
        typer.Option(
            "--resolution-type",
            help="How shards store resolution: list ([width, height] as list<int64>, as the real shards) "
            'or string ("[width, height]").',
        ),
    ] = ResolutionType.list,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the shards of an existing DIR/data.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a synthetic dataset shaped like CommunityForensics-Small (offline demo, tests, benchmarks).

    Same schema, shard names and layout as the real set (resolution a [width, height] list, real rows named by
    their dataset, one row group per shard); deterministic for a given --seed. The small set also
    gets data/metadata/generators.csv, README.md and ground_truth/duplicates.parquet.

    Examples:

    \b
      cfx synth ./cf-demo
      cfx synth ./cf-tiny --shards 4 --rows-per-shard 20 --scale 0.25 --overwrite
      cfx synth ./cf-replica --mode scale --json
      cfx synth ./cf-large --mode large --large-bytes 1.1GB
      cfx synth ./cf-strings --resolution-type string
    """
    import pyarrow.parquet as pq

    from cfx import synth as lib

    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}", "pass a non-negative --seed")
    given = {
        "--shards": (shards is not None, (Mode.small, Mode.scale)),
        "--rows-per-shard": (rows_per_shard is not None, (Mode.small,)),
        "--scale": (scale is not None, (Mode.small,)),
        "--no-duplicates": (no_duplicates, (Mode.small,)),
        "--large-bytes": (large_bytes is not None, (Mode.large,)),
    }
    for name, (is_given, modes) in given.items():
        if is_given and mode not in modes:
            raise UsageError(
                f"{name} does not apply to --mode {mode.value}", f"drop {name} or pick another --mode"
            )
    target = parse_size(large_bytes, "--large-bytes") if large_bytes is not None else 1_100_000_000
    _check_output(directory, overwrite)
    res_type = resolution_type.value

    with _output.CliReporter() as reporter:
        if mode is Mode.large:
            path = lib.make_large_shard(
                directory, target_bytes=target, seed=seed, resolution_type=res_type, reporter=reporter
            )
            meta = pq.ParquetFile(path).metadata
            summary: dict[str, Any] = {
                "mode": mode.value,
                "root": str(directory),
                "shards": [str(path)],
                "n_rows": meta.num_rows,
                "n_row_groups": meta.num_row_groups,
                "n_bytes": path.stat().st_size,
            }
            line = f"Wrote {path}: {meta.num_rows:,} rows, {human_bytes(path.stat().st_size)}, one row group"
        else:
            if mode is Mode.small:
                info = lib.make_dataset(
                    directory,
                    shards=6 if shards is None else shards,
                    rows_per_shard=60 if rows_per_shard is None else rows_per_shard,
                    seed=seed,
                    scale=1.0 if scale is None else scale,
                    duplicates=not no_duplicates,
                    resolution_type=res_type,
                    reporter=reporter,
                )
            else:
                info = lib.make_scale_replica(
                    directory,
                    seed=seed,
                    shards=186 if shards is None else shards,
                    resolution_type=res_type,
                    reporter=reporter,
                )
            summary = {"mode": mode.value, **info.to_dict()}
            line = (
                f"Wrote {len(info.shards)} shards to {directory / 'data'}: {info.n_rows:,} rows "
                f"({info.n_generated:,} generated, {info.n_real:,} real)"
            )
            if info.ground_truth is not None:
                line += f"; {info.n_pairs} duplicate pairs in {info.ground_truth}"
    if json_out:
        _output.print_json(summary)
    else:
        print(line)


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
