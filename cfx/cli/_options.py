"""Shared option aliases, defined once (STYLE.md §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SourceArg = Annotated[
    str,
    typer.Argument(
        help="Dataset folder, shard file or glob, saved manifest (.parquet), '-' for a manifest on stdin, "
        "or hf://datasets/ORG/REPO[@REV].",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the manifest here (parquet). Default: Arrow IPC on stdout when piped."
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed: the same seed gives the same rows everywhere.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
WorkersOpt = Annotated[
    int, typer.Option("--workers", "-w", min=1, help="Parallel workers (processes or connections).")
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Git revision (branch, tag or commit) of the Hub repo.")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Hugging Face token (default: HF_TOKEN or the saved login).")
]
SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Skip unreadable shards (named on stderr) and exit 0 instead of 6.")
]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where", help="SQL filter over manifest columns, e.g. \"architecture = 'GAN' AND width >= 512\"."
    ),
]

# Licence options: every selecting command accepts them (see docs/licenses.md).
LicensesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--licenses",
        help="Keep only rows whose licence id matches one of these globs (repeatable or comma-separated), "
        "e.g. 'creativeml-openrail-m,cc-by-*'.",
    ),
]
ExcludeLicensesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude-licenses", help="Drop rows whose licence id matches one of these globs, e.g. '*-nc-*'."
    ),
]
CommercialOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--commercial-only", help="Keep only rows under licences known to allow commercial use (not unknown)."
    ),
]
LicenseTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--license-table",
        help="Generator licence table (CSV/TSV/JSON/JSONL/parquet). Default: the dataset's data/metadata.",
    ),
]
ModelColumnOpt = Annotated[
    str | None,
    typer.Option("--model-column", help="Model-name column of --license-table (default: found by name)."),
]
LicenseColumnOpt = Annotated[
    str | None,
    typer.Option("--license-column", help="Licence column of --license-table (default: found by name)."),
]
RealLicenseTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--real-license-table",
        help="Table (real_source, license) extending/overriding the built-in real-source licences.",
    ),
]
