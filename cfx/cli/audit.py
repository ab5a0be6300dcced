"""`cfx audit`: the shortcut canary — how well each cheap metadata feature alone predicts the label."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import JsonOpt, SeedOpt, SkipBadOpt, SourceArg, TokenOpt, WorkersOpt, ranged
from cfx.cli._output import CliReporter, out_console, print_json
from cfx.defaults import AUDIT_THRESHOLD
from cfx.errors import ShortcutFoundError, UsageError


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
    _render_joint(report.get("joint"), console)
    _render_quality(report.get("quality"), console)
    for f in report["features"]:
        if f["fix"]:
            console.print(f"fix {f['feature']}: {f['fix']}", markup=False)
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
            f"{len(flagged)} shortcut(s): {', '.join(flagged)} — remove them with the fixes above and audit again",
            markup=False,
        )
    else:
        console.print(f"no feature above {report['threshold']}", markup=False)


def _render_joint(joint: dict[str, Any] | None, console: Console) -> None:
    if joint is None:
        return
    if joint["auroc"] is None:
        console.print(f"joint canary: skipped — {joint['note']}", markup=False)
        return
    top = ", ".join(f"{k} {v:+.3f}" for k, v in list(joint["importances"].items())[:5])
    flag = " SHORTCUT (features together give the label away)" if joint["flagged"] else ""
    console.print(
        f"joint canary (all features, gradient boosting, {joint['folds']}-fold grouped by source): "
        f"AUROC {joint['auroc']:.3f}{flag}",
        markup=False,
    )
    console.print(f"  permutation importance (AUROC lost): {top}", markup=False)
    if joint["note"]:
        console.print(f"  {joint['note']}", markup=False)


def _render_quality(quality: dict[str, Any] | None, console: Console) -> None:
    if quality is None:
        return
    if quality["issues"]:
        table = Table(
            title="quality issues (rows with the issue / rows with known facts)", title_justify="left"
        )
        for name, justify in (
            ("issue", "left"),
            ("real", "right"),
            ("generated", "right"),
            ("unknown", "right"),
            ("", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for i in quality["issues"]:
            unknown = i["unknown"]["real"] + i["unknown"]["generated"]
            table.add_row(
                i["kind"],
                f"{i['real']:,} ({i['real_rate']:.1%})",
                f"{i['generated']:,} ({i['generated_rate']:.1%})",
                f"{unknown:,}",
                f"SHORTCUT (more in {i['more_in']})" if i["shortcut"] else "",
                style="bold red" if i["shortcut"] else None,
            )
        console.print(table)
        console.print(
            "rules: " + "; ".join(f"{i['kind']}: {i['description']}" for i in quality["issues"]), markup=False
        )
    for i in quality["issues"]:
        if i["shortcut"]:
            console.print(
                f"quality issue {i['kind']} hits {i['more_in']} images more — a shortcut: a detector can learn "
                f"'{i['kind']} → {i['more_in']}'. fix: `cfx subset --drop-quality-issues {i['kind']}`",
                markup=False,
            )
    if quality["skipped"]:
        kinds = ", ".join(s["kind"] for s in quality["skipped"])
        console.print(f"quality issues {kinds}: skipped — {quality['skipped'][0]['reason']}", markup=False)


@handle_errors
def audit_cmd(
    source: SourceArg,
    as_json: JsonOpt = False,
    threshold: Annotated[
        float,
        ranged("--threshold", lo=0.5, hi=1.0, help="Flag features whose AUROC is above this."),
    ] = AUDIT_THRESHOLD,
    joint: Annotated[
        bool,
        typer.Option(
            "--joint/--no-joint",
            help="Also the joint canary: a cross-validated classifier over all features together.",
        ),
    ] = True,
    fail_above: Annotated[
        float | None,
        ranged(
            "--fail-above",
            lo=0.5,
            hi=1.0,
            help="Exit 9 when any canary (a single feature or the joint one) has an AUROC above this, naming "
            "it (to gate a pipeline); the report is still printed.",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 4,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Rank cheap features (size, aspect, format, mode, file size; with byte facts also JPEG quality,
    subsampling, progressive, actual format, metadata presence; with pixel facts also brightness, colour,
    sharpness, noise, spectral energy, blockiness, dims grid, JPEG tables, EXIF software) by how well each
    alone predicts the label — shortcuts a detector could learn instead of generation artefacts — and the
    joint canary of all together. With pixel facts also quality issues (dark, blurry, …) per label.

    For each feature: single-feature AUROC (symmetrised, 0.5 = harmless) and the balanced accuracy of the
    best threshold, worst first; features above --threshold (0.6) are flagged, each with the cfx fix.
    Byte and pixel facts come from the manifest (`cfx inspect [--pixels]`) or its cache; no image bytes
    are read. --fail-above X exits 9 when any canary is above X (the report is printed first).
    Joint canary: HistGradientBoosting, 5-fold cross-validation grouped by generator / real source
    (seeded), AUROC and permutation importances.

    Examples:

    \b
      cfx audit data/
      cfx audit balanced.parquet --json
      cfx balance data/ --match min-side:64 --match format | cfx audit -
      cfx inspect data/ -o inspected.parquet && cfx audit inspected.parquet --seed 1
      cfx audit train.parquet --fail-above 0.6 || echo "shortcut: refused"
    """
    from cfx.audit import audit
    from cfx.inspect import cached_pixels, with_file_sizes
    from cfx.load import load_manifest

    if not 0.5 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: must be between 0.5 and 1.0", "e.g. --threshold 0.6")
    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
    manifest = with_file_sizes(manifest)  # byte facts, and the num_bytes balance matches on
    manifest = cached_pixels(manifest) or manifest
    result = audit(manifest, threshold=threshold, joint=joint, seed=seed)
    report = result.to_json()
    if as_json:
        print_json(report)
    else:
        render(report, out_console())
    above = result.above(fail_above) if fail_above is not None else []
    if above:
        raise ShortcutFoundError(
            f"{len(above)} canary(ies) above --fail-above {fail_above}: {', '.join(above)}",
            "remove the shortcut(s) with the fixes in the report (`cfx balance --match …`, "
            "`cfx subset --transform …`) and audit again",
        )


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
