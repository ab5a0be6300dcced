"""`cfx demo`: the offline end-to-end walkthrough."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cfx.cli._errors import handle_errors
from cfx.cli._output import CliReporter, out_console


@handle_errors
def demo(
    out: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder for the demo dataset and outputs.")
    ] = Path("cfx-demo"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the folder if it exists.")] = False,
) -> None:
    """Build a small CF-shaped dataset offline and run the curation pipeline on it, printing each step.

    Examples:

    \b
      cfx demo
      cfx demo /tmp/cfx-demo --overwrite
    """
    from cfx.demo import run_demo

    console = out_console()
    start = time.perf_counter()
    with CliReporter() as reporter:
        for i, step in enumerate(run_demo(out, overwrite=overwrite, reporter=reporter), 1):
            console.print(f"[bold]{i}. {step.title}[/bold]")
            console.print(f"   $ {step.command}", markup=False, style="dim")
            console.print(f"   {step.summary}", markup=False)
    console.print(f"Done in {time.perf_counter() - start:.1f} s. Outputs are in {out}/", markup=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
