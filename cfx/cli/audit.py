"""`cfx audit`: the shortcut canary — how well each cheap metadata feature alone predicts the label."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import JsonOpt, SkipBadOpt, SourceArg, TokenOpt, WorkersOpt, ranged
from cfx.cli._output import CliReporter, out_console, print_json
from cfx.defaults import AUDIT_THRESHOLD
from cfx.errors import UsageError


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"cfx audit — {report['rows']:,} rows ({report['real']:,} real, {report['generated']:,} generated)",
        title_justify="left",
    )
    for name, justify in (
        ("feature", "left"),
        ("AUROC", "right"),
        ("best split", "right"),
        ("direction", "left"),
        ("rows", "right"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for f in report["features"]:
        table.add_row(
            f["feature"],
            f"{f['auroc']:.3f}",
            f"{f['balanced_accuracy']:.3f}",
            f["direction"],
            f"{f['rows']:,}",
            "SHORTCUT" if f["flagged"] else "",
            style="bold red" if f["flagged"] else None,
        )
    console.print(table)
    console.print(
        "AUROC: 0.5 = the feature says nothing about the label, 1.0 = it alone separates real from generated "
        f"(symmetrised). best split: balanced accuracy of the best single threshold. Flag: AUROC > {report['threshold']}.",
        markup=False,
    )
    for f in report["features"]:
        if f["note"]:
            console.print(f"{f['feature']}: {f['note']}", markup=False)
    for s in report["skipped"]:
        console.print(f"{s['feature']}: skipped — {s['reason']}", markup=False)
    if report["unusable_sizes"]:
        console.print(
            f"{report['unusable_sizes']:,} row(s) have unusable sizes (zero, negative or unreadable resolution): "
            "size features leave them out",
            markup=False,
        )
    flagged = report["flagged"]
    if flagged:
        console.print(
            f"{len(flagged)} shortcut(s): {', '.join(flagged)} — remove them with "
            "`cfx balance SOURCE --match min-side:64 --match format …` and audit again",
            markup=False,
        )
    else:
        console.print(f"no feature above {report['threshold']}", markup=False)


@handle_errors
def audit_cmd(
    source: SourceArg,
    as_json: JsonOpt = False,
    threshold: Annotated[
        float,
        ranged("--threshold", lo=0.5, hi=1.0, help="Flag features whose AUROC is above this."),
    ] = AUDIT_THRESHOLD,
    workers: WorkersOpt = 4,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Rank cheap metadata features (size, aspect, format, mode, file size) by how well each alone predicts
    the label — shortcuts a detector could learn instead of generation artefacts.

    For each feature: single-feature AUROC (symmetrised, 0.5 = harmless) and the balanced accuracy of the
    best threshold, worst first; features above --threshold (0.6) are flagged. File-size features need
    num_bytes (`cfx index --num-bytes`); JPEG quality is not in the metadata and is not measured.

    Examples:

    \b
      cfx audit data/
      cfx audit balanced.parquet --json
      cfx balance data/ --match min-side:64 --match format | cfx audit -
    """
    from cfx.audit import audit
    from cfx.load import load_manifest

    if not 0.5 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: must be between 0.5 and 1.0", "e.g. --threshold 0.6")
    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
    report = audit(manifest, threshold=threshold).to_json()
    if as_json:
        print_json(report)
    else:
        render(report, out_console())


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
