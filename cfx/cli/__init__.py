"""The `cfx` command line: registers the command modules, nothing else (STYLE.md §2)."""

from __future__ import annotations

from typing import Annotated

import typer

from cfx import __version__
from cfx.cli import _errors, _output

app = typer.Typer(
    name="cfx",
    help="Curate the Community Forensics image-forensics datasets: index, download, slice, dedupe, balance, split, subset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"cfx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or info logs on stderr.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Curate the Community Forensics image-forensics datasets."""
    from cfx import lineage

    lineage.reset()
    _output.set_quiet(quiet)


def _register() -> None:
    from cfx.cli import (
        audit,
        balance,
        dedupe,
        demo,
        download,
        export,
        index,
        inspect,
        leaks,
        licenses,
        report,
        slice,
        split,
        stats,
        subset,
        synth,
    )

    for module in (
        index,
        stats,
        inspect,
        slice,
        subset,
        export,
        download,
        synth,
        licenses,
        dedupe,
        balance,
        split,
        leaks,
        audit,
        report,
        demo,
    ):
        module.register(app)


_register()


def main() -> None:
    _errors.run(app)
