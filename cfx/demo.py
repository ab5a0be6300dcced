"""The embedded default job: build a small CF-shaped dataset offline and curate it step by step.

Each step calls the library directly and reports the equivalent shell command, so the demo doubles as a
walkthrough of the CLI.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfx.errors import OutputError
from cfx.index import build_manifest, raise_for_bad
from cfx.outputs import write_atomic
from cfx.progress import NullReporter, Reporter
from cfx.sources import resolve_local
from cfx.stats import compute_stats, plot_stats


@dataclass
class DemoStep:
    title: str
    command: str
    summary: str
    outputs: list[str] = field(default_factory=list)


@dataclass
class DemoContext:
    out: Path
    reporter: Reporter
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset(self) -> Path:
        return self.out / "dataset"


def _synth(ctx: DemoContext) -> DemoStep:
    from cfx.synth import make_dataset

    info = make_dataset(ctx.dataset, reporter=ctx.reporter)
    return DemoStep(
        "Build a CF-shaped dataset (offline)",
        f"cfx synth {ctx.dataset}",
        f"{info.n_rows} images in {len(info.shards)} single-row-group shards: {info.n_real} real, "
        f"{info.n_generated} generated, with injected duplicates and a generator licence table",
        [str(ctx.dataset)],
    )


def _index(ctx: DemoContext) -> DemoStep:
    result = build_manifest(resolve_local(str(ctx.dataset)), reporter=ctx.reporter)
    raise_for_bad(result, skip_bad=False)
    manifest = result.manifest.with_df(result.manifest.df, step=f"index {ctx.dataset}")
    path = ctx.out / "manifest.parquet"
    manifest.write(path)
    ctx.state["manifest"] = manifest
    ctx.state["manifest_path"] = path
    return DemoStep(
        "Index the shards (metadata only, no image bytes)",
        f"cfx index {ctx.dataset} -o {path}",
        f"{len(manifest)} rows from {len(manifest.shards)} shards",
        [str(path)],
    )


def _stats(ctx: DemoContext) -> DemoStep:
    stats = compute_stats(ctx.state["manifest"])
    path = ctx.out / "stats.json"
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=2)))
    plot = ctx.out / "stats.png"
    plot_stats(stats, str(plot))
    t = stats["totals"]
    fmt = {v["value"]: v for v in stats["breakdowns"]["format"]["values"]}
    return DemoStep(
        "Describe it",
        f"cfx stats {ctx.state['manifest_path']} --json --plot {plot}",
        f"{t['rows']} rows: {t['real']} real / {t['generated']} generated from {t['generators']} generators; "
        f"formats: " + ", ".join(f"{k} {v['rows']}" for k, v in fmt.items()),
        [str(path), str(plot)],
    )


def _licenses(ctx: DemoContext) -> DemoStep:
    from cfx.licenses import annotate_licenses_info, license_report

    # the deduplicated manifest when the dedupe step ran: later steps curate what survived it
    source = ctx.state.get("kept", ctx.state["manifest"])
    source_path = ctx.state.get("kept_path", ctx.state["manifest_path"])
    manifest, info = annotate_licenses_info(source, reporter=ctx.reporter)
    report = license_report(manifest, info)
    path = ctx.out / "licenses.json"
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    licensed = ctx.out / "licensed.parquet"
    manifest.write(licensed)
    ctx.state["licensed"] = manifest
    top = ", ".join(f"{e['license']} {e['rows']}" for e in report["licenses"][:4])
    missing = [m["model_name"] for m in report["missing_generators"]]
    return DemoStep(
        "Licences: generators from data/metadata, real images by source",
        f"cfx licenses {source_path} -o {licensed} --json",
        f"{top}; non-commercial {report['flags']['non_commercial']['rows']} rows, "
        f"share-alike {report['flags']['share_alike']['rows']}; not in the licence table: "
        f"{', '.join(missing) or 'none'}",
        [str(path), str(licensed)],
    )


def _audit_summary(result: Any) -> str:
    worst = ", ".join(f"{f.feature} {f.auroc:.2f}" for f in result.features[:3])
    flagged = ", ".join(f.feature for f in result.flagged) or "none"
    return f"worst: {worst}; flagged (> {result.threshold}): {flagged}"


def _audit(ctx: DemoContext, key: str, path_key: str, name: str, title: str) -> DemoStep:
    from cfx.audit import audit

    result = audit(ctx.state[key])
    path = ctx.out / name
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(result.to_json(), indent=2)))
    return DemoStep(title, f"cfx audit {ctx.state[path_key]} --json", _audit_summary(result), [str(path)])


def _audit_raw(ctx: DemoContext) -> DemoStep:
    return _audit(
        ctx,
        "manifest",
        "manifest_path",
        "audit-raw.json",
        "Audit shortcuts: does size or format alone give the label away?",
    )


def _balance(ctx: DemoContext) -> DemoStep:
    from cfx.balance import BalanceOptions, balance, parse_match

    manifest = ctx.state.get("licensed", ctx.state["manifest"])
    specs = [parse_match(s, manifest.df.columns) for s in ("min-side", "format")]
    result = balance(manifest, BalanceOptions(match=specs, pair=True, seed=0))
    path = ctx.out / "balanced.parquet"
    result.manifest.write(path)
    report = ctx.out / "balance.json"
    write_atomic(report, lambda tmp: Path(tmp).write_text(json.dumps(result.to_json(), indent=2)))
    ctx.state["balanced"] = result.manifest
    ctx.state["balanced_path"] = path
    trail = " → ".join(f"{s.name} {s.rows}" for s in result.steps)
    f = result.final
    return DemoStep(
        "Balance real against generated, matched on min side and format, paired 1:1",
        f"cfx balance {ctx.out / 'licensed.parquet'} --match min-side --match format --pair -o {path}",
        f"{f.real} real + {f.generated} generated from {f.generators} generators in {result.bins} bins "
        f"({trail})",
        [str(path), str(report)],
    )


def _audit_balanced(ctx: DemoContext) -> DemoStep:
    return _audit(
        ctx, "balanced", "balanced_path", "audit-balanced.json", "Audit the balanced manifest again"
    )


# The Grommelt et al. fix ("Fake or JPEG?", arXiv 2403.17608): one size and one JPEG quality for both labels.
# A centre crop rather than resize:max-side: on this set max-side alone makes sizes *more* telling (generated
# 512x512 stay, reals become 512x384 …: min side 0.53 → 0.78); 256 px enlarges no generated image.
FIX_TRANSFORMS = ("resize:min-side=256", "center-crop:256", "jpeg:96")
CANARIES = ("format", "jpeg_quality")  # the container shortcut: real JPEG, generated PNG


def _scores(result: Any) -> dict[str, float]:
    """Feature → AUROC, plus the joint canary under ``joint``."""
    scores = {f.feature: f.auroc for f in result.features}
    if result.joint is not None and result.joint.auroc is not None:
        scores["joint"] = result.joint.auroc
    return scores


def _audit_bytes(ctx: DemoContext, manifest: Any, name: str) -> tuple[Any, Path]:
    from cfx.audit import audit

    result = audit(manifest, joint=True, seed=0)
    path = ctx.out / name
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(result.to_json(), indent=2)))
    return result, path


def _inspect(ctx: DemoContext) -> DemoStep:
    import polars as pl

    from cfx.inspect import inspect_manifest

    inspected = inspect_manifest(ctx.state["licensed"], workers=2, reporter=ctx.reporter)
    path = ctx.out / "inspected.parquet"
    inspected.manifest.write(path)
    result, report = _audit_bytes(ctx, inspected.manifest, "audit-bytes.json")
    ctx.state["bytes_scores"] = scores = _scores(result)
    df = inspected.manifest.df
    real_q = df.filter((pl.col("label") == 0) & pl.col("jpeg_quality").is_not_null())["jpeg_quality"]
    lo, hi = int(real_q.min()), int(real_q.max())  # type: ignore[arg-type]
    flagged = ", ".join(f.feature for f in result.flagged)
    return DemoStep(
        "Inspect the image bytes and audit with byte facts: is it fake, or just JPEG?",
        f"cfx inspect {ctx.out / 'licensed.parquet'} -o {path} && cfx audit {path} --json",
        f"{inspected.read_rows} images read, {inspected.cached_rows} from dedupe's cache; reals JPEG "
        f"(quality {lo}–{hi}) or PNG, generated PNG: "
        + ", ".join(f"{k} {scores[k]:.2f}" for k in CANARIES)
        + f", joint canary {scores['joint']:.2f}; flagged: {flagged or 'none'}",
        [str(path), str(report)],
    )


def _fix_bytes(ctx: DemoContext) -> DemoStep:
    from cfx.inspect import inspect_manifest
    from cfx.manifest import read_manifest
    from cfx.subset import write_subset
    from cfx.transform import Pipeline

    out = ctx.out / "fixed"
    transforms = " ".join(f"--transform {t}" for t in FIX_TRANSFORMS)
    subset = f"cfx subset {ctx.out / 'licensed.parquet'} --out {out} {transforms} --seed 0"
    written = write_subset(
        ctx.state["licensed"],
        out,
        seed=0,
        command=subset,
        transform=Pipeline.parse(list(FIX_TRANSFORMS)),
        workers=2,
        reporter=ctx.reporter,
    )
    path = ctx.out / "fixed-inspected.parquet"
    inspected = inspect_manifest(read_manifest(out / "manifest.parquet"), workers=2, reporter=ctx.reporter)
    inspected.manifest.write(path)
    result, report = _audit_bytes(ctx, inspected.manifest, "audit-fixed.json")
    before, after = ctx.state["bytes_scores"], _scores(result)
    ctx.state["fixed_scores"] = after
    moved = ", ".join(f"{k} {before[k]:.2f} → {after[k]:.2f}" for k in (*CANARIES, "joint"))
    left = ", ".join(f"{f.feature} {f.auroc:.2f}" for f in result.flagged)
    return DemoStep(
        "The fix (Grommelt et al.): one size, one format, one JPEG quality for both labels; inspect, audit again",
        f"{subset} && cfx inspect {out / 'manifest.parquet'} -o {path} && cfx audit {path} --json",
        f"{written.rows} rows re-encoded; {moved}; still flagged: {left or 'none'}"
        + (" (the pictures themselves, not their container)" if left else ""),
        [str(out), str(path), str(report)],
    )


def _slice(ctx: DemoContext) -> DemoStep:
    from cfx.slice import SliceSpec, slice_manifest

    spec = SliceSpec(sample=0.2, seed=0, stratify="model_name")
    sliced = slice_manifest(ctx.state["manifest"], spec, reporter=ctx.reporter).manifest
    path = ctx.out / "sample.parquet"
    sliced.write(path)
    ends = slice_manifest(ctx.state["manifest"], SliceSpec(rows="[:5%]+[-5%:]")).manifest
    real = int((sliced.df.get_column("label") == 0).sum())
    return DemoStep(
        "Slice: a seeded sample, stratified by generator (no image bytes read)",
        f"cfx slice {ctx.state['manifest_path']} --sample 20% --stratify model_name --seed 0 -o {path}",
        f"{len(sliced)} of {len(ctx.state['manifest'])} rows ({real} real, {len(sliced) - real} generated, "
        f"every generator in proportion); `--rows '[:5%]+[-5%:]'` would pick {len(ends)} rows",
        [str(path)],
    )


def _subset(ctx: DemoContext) -> DemoStep:
    import polars as pl

    from cfx.select import Selection, apply_selection
    from cfx.subset import write_subset

    # the licence-annotated manifest when the licences step ran: the card then lists the generators' licences
    licensed = "licensed" in ctx.state
    manifest = ctx.state["licensed"] if licensed else ctx.state["manifest"]
    source_path = ctx.out / "licensed.parquet" if licensed else ctx.state["manifest_path"]
    gen = manifest.df.filter((pl.col("label") == 1) & pl.col("model_name").str.contains("/"))
    org = gen.get_column("model_name").str.split("/").list.first().mode().sort()[0]
    real = manifest.df.filter(pl.col("label") == 0).get_column("real_source").drop_nulls()
    source = real.mode().sort()[0] if real.len() else "COCO"
    out = ctx.out / "subset"
    command = (
        f"cfx subset {source_path} --out {out} --generators '{org}/*' "
        f"--real-sources {source} --max-per-generator 20 --seed 0"
    )
    selection = Selection(generators=[f"{org}/*"], real_sources=[source], max_per_generator=20, seed=0)
    selected = apply_selection(manifest, selection, reporter=ctx.reporter)
    result = write_subset(
        selected.manifest,
        out,
        seed=0,
        command=command,
        selection=selection.describe(),
        reporter=ctx.reporter,
    )
    counts = dict(result.plan.counts("label"))
    return DemoStep(
        "Subset: write a new parquet dataset (exact source schema, byte-identical images)",
        command,
        f"{result.rows} rows ({counts.get('real', 0)} real {source}, {counts.get('generated', 0)} generated by "
        f"{len(selected.matched_generators)} {org} generators) in {len(result.files)} file(s), "
        f"{result.bytes / 1e6:.1f} MB, with README.md (dataset card) and manifest.parquet",
        [str(out)],
    )


def _dedupe(ctx: DemoContext) -> DemoStep:
    from cfx.dedupe import dedupe, write_report
    from cfx.gallery import write_gallery

    result = dedupe(ctx.state["manifest"], workers=2, reporter=ctx.reporter)
    folder = ctx.out / "dedupe"
    kept_path = ctx.out / "kept.parquet"
    result.kept.write(kept_path)
    write_report(result, folder)
    sheets = write_gallery(
        result.hashed,
        result.groups,
        folder / "gallery",
        threshold=result.summary["options"]["threshold"],
        max_sheets=6,
        reporter=ctx.reporter,
    )
    ctx.state["kept"] = result.kept
    ctx.state["kept_path"] = kept_path
    s = result.summary
    c = s["conflicts"]
    return DemoStep(
        "Remove duplicates (exact bytes + pHash), report label conflicts",
        f"cfx dedupe {ctx.state['manifest_path']} -o {kept_path} --report {folder} --gallery {folder / 'gallery'}",
        f"{s['exact_duplicates']} exact and {s['near_duplicates']} near duplicates in {s['groups']} groups, "
        f"{c['pairs']} label conflicts (same picture labelled real and generated, dropped); "
        f"{s['removed']} rows removed, {s['kept']} kept"
        + (f"; contact sheet: {sheets[0]}" if sheets else ""),
        [str(kept_path), str(folder), *(str(p) for p in sheets)],
    )


def _subset_balanced(ctx: DemoContext) -> DemoStep:
    from cfx.subset import write_subset

    out = ctx.out / "train-set"
    command = f"cfx subset {ctx.state['balanced_path']} --out {out} --order shuffle --seed 0"
    result = write_subset(
        ctx.state["balanced"], out, order="shuffle", seed=0, command=command, reporter=ctx.reporter
    )
    counts = dict(result.plan.counts("label"))
    return DemoStep(
        "Write the balanced, deduplicated, matched selection as a training set",
        command,
        f"{result.rows} rows ({counts.get('real', 0)} real, {counts.get('generated', 0)} generated, shuffled) in "
        f"{len(result.files)} file(s), {result.bytes / 1e6:.1f} MB — ready for "
        f"datasets.load_dataset('parquet', data_dir='{out}')",
        [str(out)],
    )


def _split(ctx: DemoContext) -> DemoStep:
    from cfx.leaks import LeakOptions, leaks
    from cfx.leaks import write_report as write_leak_report
    from cfx.split import SplitOptions, split, write_parts

    options = SplitOptions(prompts=True, test_architectures=("GAN",), seed=0)
    result = split(ctx.state["kept"], options, workers=2, reporter=ctx.reporter)
    folder = ctx.out / "splits"
    write_parts(result, folder)
    check = leaks(
        result.parts["train"], result.parts["test"], LeakOptions(near=True, prompts=True), workers=2
    )
    write_leak_report(check, folder / "leaks")
    ctx.state["train"], ctx.state["test"] = result.parts["train"], result.parts["test"]
    s = result.summary
    shares = ", ".join(f"{p['split']} {p['rows']}" for p in s["splits"])
    kinds = check.summary["by_kind"]
    return DemoStep(
        "Split leak-free: GAN generators held out for test, duplicates and prompts kept together",
        f"cfx split {ctx.state['kept_path']} --prompts --test-architectures GAN --out {folder} && "
        f"cfx leaks {folder / 'train.parquet'} {folder / 'test.parquet'} --near --prompts --fail-on-leak",
        f"{shares} rows; {s['held_out_group_rows']} rows held out, {s['merged_groups']} groups merged; "
        f"leak proof {'zero' if s['leak_free'] else 'FAILED'}; cfx leaks train × test: "
        f"{kinds['exact']['keys']} exact, {kinds['near']['pairs_not_exact']} near, "
        f"{kinds['prompt']['keys']} prompt, {kinds['generator']['values']} shared generators",
        [str(folder)],
    )


def _report(ctx: DemoContext) -> DemoStep:
    from cfx.report import ReportOptions, report

    out, splits = ctx.out / "report", ctx.out / "splits"
    options = ReportOptions(sample=120, seed=0, workers=2)
    data = report(
        ctx.state["train"], out, options, against=ctx.state["test"], against_source=str(splits / "test.parquet"),
        reporter=ctx.reporter,
    )  # fmt: skip
    comp, audit, dup = data["composition"]["overall"], data["audit"], data["duplicates"]
    worst = audit["features"][0] if audit.get("features") else None
    dup_text = (
        f"{dup['exact']} exact / {dup['near']} near duplicates left"
        if "missing" not in dup
        else "duplicates not measured"
    )
    x = data["against"]
    return DemoStep(
        "Report the training set: the evidence in one page (open report/index.html in a browser)",
        f"cfx report {splits / 'train.parquet'} --out {out} --against {splits / 'test.parquet'} --sample 120",
        f"{comp['rows']} rows, {comp['generators']} generators, {comp['real_sources']} real sources; "
        + (f"worst single feature {worst['feature']} AUROC {worst['auroc']:.3f}; " if worst else "")
        + f"{dup_text}; against test: {x['leaks']} leaks; {data['browse']['sampled']} thumbnails",
        [str(out / "index.html"), str(out / "report.json")],
    )


STEPS: list[Callable[[DemoContext], DemoStep]] = [
    _synth,
    _index,
    _stats,
    _slice,
    _dedupe,
    _licenses,
    _audit_raw,
    _balance,
    _audit_balanced,
    _inspect,
    _fix_bytes,
    _subset,
    _subset_balanced,
    _split,
    _report,
]


def run_demo(out: Path, *, overwrite: bool = False, reporter: Reporter | None = None) -> Iterator[DemoStep]:
    """Run every demo step into ``out``, yielding each step's report as it finishes."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"{out} exists and is not empty", "pass --overwrite or pick another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, reporter=reporter or NullReporter())
    for step in STEPS:
        yield step(ctx)
