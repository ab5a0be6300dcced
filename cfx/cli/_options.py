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
