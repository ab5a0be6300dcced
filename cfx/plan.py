"""Plan-first downloads: decide from the Hub's metadata which shards a selection needs, then fetch only those.

A Community Forensics shard is one row group of 1.5–4 GB, so one wanted image costs its whole shard. The plan is
made from the remote metadata-only index (``cfx.index`` through HfFileSystem: footers and metadata column chunks,
well under 2% of the bytes, cached per shard) or from a manifest of the same repo:

1. the selection (``cfx.select``) gives the rows; their shards, sizes and row counts are the plan;
2. ``greedy_cover`` picks shards maximising newly covered values per byte — each selected generated row stands
   for its generator and architecture, each real row for its real source (only the kinds the selection names:
   ``--generators``/``--architectures`` ask to cover generators and architectures, so shards holding only the
   real rows the per-side filters keep add nothing; no such filter: every kind). Without a budget it shows the
   cheapest set covering every requested value (when that is fewer shards); with ``budget`` it picks the
   shards to download, stopping when everything reachable is covered;
3. the download plan (``cfx.download``) is made at the index's commit, so the index and the files agree;
4. after the download, ``local_manifest`` re-roots the selected rows at the download folder, checking each
   shard against the size the Hub listed and the hash the download verified, for ``write_subset``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from cfx import download as dl
from cfx.errors import InputError, UsageError
from cfx.licenses import ensure_licenses
from cfx.load import load_manifest
from cfx.manifest import Manifest, ShardInfo
from cfx.progress import NullReporter, Reporter
from cfx.schema import GENERATED, REAL
from cfx.select import Selection, SelectionStep, apply_selection
from cfx.shardspec import ShardSet, format_shard_spec, shard_number
from cfx.sources import HubSpec, natural_key
from cfx.subset import check_output, write_subset

# what a row stands for in coverage: generated rows by generator and architecture, real rows by source
KINDS = ("generator", "architecture", "real_source")


@dataclass(frozen=True)
class ShardNeed:
    """One shard the selection touches: its size, the rows selected in it and the values they cover."""

    shard: str
    size: int
    rows: int
    source_rows: int | None  # rows of the shard in the index (None for a piped manifest: unknown)
    values: frozenset[str]  # "generator:X", "architecture:Y", "real_source:Z"


@dataclass(frozen=True)
class Coverage:
    """A set of shards and what it covers of the requested values."""

    shards: tuple[str, ...]
    bytes: int
    rows: int
    covered: frozenset[str]
    requested: frozenset[str]

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (covered, requested), for the kinds that have requested values."""
        out = {}
        for kind in KINDS:
            req = {v for v in self.requested if v.startswith(kind + ":")}
            if req:
                out[kind] = (len(req & self.covered), len(req))
        return out

    @property
    def missing(self) -> list[str]:
        return sorted(self.requested - self.covered)

    def to_json(self) -> dict[str, Any]:
        return {
            "shards": list(self.shards),
            "bytes": self.bytes,
            "rows": self.rows,
            "covered": len(self.covered),
            "requested": len(self.requested),
            "by_kind": {k: {"covered": c, "requested": r} for k, (c, r) in self.by_kind().items()},
            "missing": self.missing,
        }


def coverage_kinds(selection: Selection) -> tuple[str, ...]:
    """The kinds of value a selection asks to cover: generators and architectures when it names either
    (real sources too when it names them), real sources alone when only they are named, else every kind."""
    kinds: list[str] = []
    if selection.generators or selection.architectures:
        kinds += ["generator", "architecture"]
    if selection.real_sources:
        kinds.append("real_source")
    return tuple(kinds) or KINDS


def shard_needs(
    selected: Manifest, source: Manifest | None = None, kinds: Sequence[str] = KINDS
) -> list[ShardNeed]:
    """Per touched shard (in natural order): size, selected rows, rows in ``source`` (the whole index, if
    given) and the values of ``kinds`` its selected rows cover."""
    df = selected.df
    if df.height == 0:
        return []
    total = dict(source.df.group_by("shard").len().iter_rows()) if source is not None else {}
    values: dict[str, set[str]] = {}
    gen = pl.col("label") == GENERATED
    for kind, column, mask in (
        ("generator", "model_name", gen),
        ("architecture", "architecture", gen),
        ("real_source", "real_source", pl.col("label") == REAL),
    ):
        if kind not in kinds or column not in df.columns:
            continue
        pairs = (
            df.filter(mask)
            .select("shard", pl.col(column).cast(pl.String).alias("v"))
            .filter(pl.col("v").is_not_null() & (pl.col("v") != ""))
            .unique()
        )
        for shard, v in pairs.iter_rows():
            values.setdefault(shard, set()).add(f"{kind}:{v}")
    rows = dict(df.group_by("shard").len().iter_rows())
    needs = []
    for shard in sorted(rows, key=natural_key):
        info = selected.shards.get(shard)
        if info is None:
            raise InputError(
                f"the manifest has no size for shard {shard}",
                "make the manifest with cfx from hf://datasets/ORG/REPO (it records every shard's size)",
            )
        needs.append(
            ShardNeed(
                shard=shard,
                size=info.size,
                rows=int(rows[shard]),
                source_rows=int(total[shard]) if shard in total else None,
                values=frozenset(values.get(shard, ())),
            )
        )
    return needs


def greedy_cover(needs: Sequence[ShardNeed], budget: int | None = None) -> Coverage:
    """Shards chosen one at a time by newly covered values per byte (ties: more rows per byte, then shard
    order) until every value is covered or, with ``budget``, no shard adding a value still fits. With a
    budget, what is left of it then goes to the shards with the most selected rows per byte that still fit
    (more data of what was asked for); without one, only the covering shards are chosen."""
    requested = frozenset().union(*(n.values for n in needs)) if needs else frozenset()
    chosen: list[ShardNeed] = []
    covered: set[str] = set()
    spent = 0
    left = list(needs)
    while True:
        best: ShardNeed | None = None
        best_key: tuple[float, float] | None = None
        for n in left:
            if budget is not None and spent + n.size > budget:
                continue
            gain = len(n.values - covered)
            if not gain:
                continue
            size = max(n.size, 1)
            key = (gain / size, n.rows / size)
            if best_key is None or key > best_key:  # strict: the earlier shard wins a tie
                best, best_key = n, key
        if best is None:
            break
        chosen.append(best)
        left.remove(best)
        covered |= best.values
        spent += best.size
    if budget is not None:  # fill: most rows per byte first (ties: shard order)
        for n in sorted(left, key=lambda n: -n.rows / max(n.size, 1)):
            if spent + n.size <= budget:
                chosen.append(n)
                spent += n.size
    chosen.sort(key=lambda n: natural_key(n.shard))
    return Coverage(
        shards=tuple(n.shard for n in chosen),
        bytes=spent,
        rows=sum(n.rows for n in chosen),
        covered=frozenset(covered),
        requested=requested,
    )


@dataclass
class FetchPlan:
    """What a plan-first download will fetch, and why."""

    repo_id: str
    commit: str
    selection: str  # the filters, in words
    manifest: Manifest  # the selected rows of the chosen shards (remote root)
    needs: list[ShardNeed]  # every shard the selection touches
    chosen: list[str]  # the shards to download
    budget: int | None
    budget_plan: Coverage | None  # what --budget chose when it could not take every needed shard
    alternative: Coverage | None  # the cheapest set covering every value, when fewer shards than needed
    coverage: Coverage  # what the chosen shards cover
    download: dl.DownloadPlan
    steps: list[SelectionStep] = field(default_factory=list)
    from_manifest: bool = False

    @property
    def needed_bytes(self) -> int:
        return sum(n.size for n in self.needs)

    @property
    def needed_rows(self) -> int:
        return sum(n.rows for n in self.needs)

    @property
    def chosen_bytes(self) -> int:
        return sum(n.size for n in self.needs if n.shard in set(self.chosen))

    @property
    def extra_files(self) -> list[dl.PlannedFile]:
        """Files fetched besides the shards (README.md, data/metadata/*)."""
        shards = set(self.chosen)
        return [p for p in self.download.files if p.remote.path not in shards]

    def to_dict(self) -> dict[str, Any]:
        chosen = set(self.chosen)
        return {
            "repo": self.repo_id,
            "commit": self.commit,
            "root": self.manifest.root,
            "selection": self.selection,
            "from_manifest": self.from_manifest,
            "steps": [{"name": s.name, "before": s.before, "after": s.after} for s in self.steps],
            "shards": [
                {
                    "shard": n.shard,
                    "bytes": n.size,
                    "rows": n.rows,
                    "of": n.source_rows,
                    "chosen": n.shard in chosen,
                }
                for n in self.needs
            ],
            "needed": {"shards": len(self.needs), "bytes": self.needed_bytes, "rows": self.needed_rows},
            "chosen": {"shards": len(self.chosen), "bytes": self.chosen_bytes, "rows": len(self.manifest)},
            "coverage": self.coverage.to_json(),
            "budget": self.budget,
            "budget_plan": self.budget_plan.to_json() if self.budget_plan else None,
            "alternative": self.alternative.to_json() if self.alternative else None,
            "download": self.download.to_dict(),
        }


def _hub_root(manifest: Manifest, repo_id: str, origin: str) -> HubSpec:
    if not manifest.is_remote:
        raise UsageError(
            f"{origin} points at the local folder {manifest.root}, not at a Hub repo",
            f"make it from the Hub: `cfx slice hf://datasets/{repo_id} ... | cfx download {repo_id} --out DIR "
            "--manifest -`",
        )
    hub = HubSpec.parse(manifest.root)
    if hub.repo_id.lower() != repo_id.lower():
        raise UsageError(
            f"{origin} is of {hub.repo_id}, not of {repo_id}",
            f"pass its repo: `cfx download {hub.repo_id} --out DIR --manifest ...`",
        )
    if not hub.revision:
        raise InputError(f"{origin} is not pinned to a commit ({manifest.root})", "re-create it with cfx")
    return hub


def plan_fetch(
    out: Path | str,
    repo_id: str = dl.DEFAULT_REPO,
    *,
    selection: Selection | None = None,
    manifest: Manifest | None = None,
    revision: str | None = None,
    budget: int | None = None,
    license_table: Path | str | None = None,
    model_column: str | None = None,
    license_column: str | None = None,
    real_license_table: Path | str | None = None,
    shards: Sequence[int] | ShardSet | None = None,
    include: Sequence[str] = (),
    token: str | None = None,
    workers: int = 4,
    reporter: Reporter | None = None,
) -> FetchPlan:
    """Select rows from the remote index of ``repo_id`` (or from ``manifest``, a manifest of that repo) and
    plan the download of the shards holding them. Reads only metadata; writes nothing but the index cache.

    ``shards`` (shard numbers) limits the rows considered to those shards; ``include`` globs name more repo
    files to fetch along with the planned shards (e.g. ``data/metadata/*``)."""
    reporter = reporter or NullReporter()
    selection = selection or Selection()
    if budget is not None and budget < 1:
        raise UsageError("--budget must be positive", "write e.g. 50GB")
    if manifest is None:
        spec = f"hf://datasets/{repo_id}" + (f"@{revision}" if revision else "")
        source = load_manifest(spec, token=token, workers=workers, reporter=reporter)
        hub = _hub_root(source, repo_id, "the index")
    else:
        source = manifest
        hub = _hub_root(source, repo_id, "the manifest")
        if revision and revision != hub.revision:
            raise UsageError(
                f"--revision {revision} conflicts with the manifest, which is pinned to commit {hub.revision}",
                "leave out --revision: the shards are fetched at the manifest's commit",
            )
    commit = str(hub.revision)
    if shards is not None:
        source = _only_shards(source, shards, f"{repo_id}@{commit[:12]}")
    source = ensure_licenses(
        source,
        needed=selection.filters_licenses,
        license_table=license_table,
        model_column=model_column,
        license_column=license_column,
        real_table=real_license_table,
        token=token,
        reporter=reporter,
    )
    selected = apply_selection(source, selection, reporter=reporter)
    needs = shard_needs(selected.manifest, source if manifest is None else None, coverage_kinds(selection))
    full = greedy_cover(needs)
    alternative = full if len(full.shards) < len(needs) else None
    budget_plan = None
    chosen = [n.shard for n in needs]
    if budget is not None and sum(n.size for n in needs) > budget:
        smallest = min(needs, key=lambda n: n.size)
        if smallest.size > budget:
            raise UsageError(
                f"--budget {_size(budget)} is smaller than any shard the selection needs "
                f"(the smallest, {smallest.shard}, has {_size(smallest.size)})",
                f"raise --budget to at least {_size(smallest.size)}, or select rows in smaller shards",
            )
        budget_plan = greedy_cover(needs, budget)
        chosen = list(budget_plan.shards)
    keep = set(chosen)
    picked = selected.manifest.with_df(selected.manifest.df.filter(pl.col("shard").is_in(list(keep))))
    coverage = Coverage(
        shards=tuple(chosen),
        bytes=sum(n.size for n in needs if n.shard in keep),
        rows=len(picked),
        covered=frozenset().union(*(n.values for n in needs if n.shard in keep)),
        requested=full.requested,
    )
    download = dl.plan_download(
        out,
        repo_id,
        revision=commit,
        include=[glob.escape(s) for s in chosen] + list(include),
        token=token,
        reporter=reporter,
    )
    _check_files(download, picked, chosen)
    return FetchPlan(
        repo_id=repo_id,
        commit=commit,
        selection=selection.describe(),
        manifest=picked,
        needs=needs,
        chosen=chosen,
        budget=budget,
        budget_plan=budget_plan,
        alternative=alternative,
        coverage=coverage,
        download=download,
        steps=selected.steps,
        from_manifest=manifest is not None,
    )


def _only_shards(source: Manifest, numbers: Sequence[int] | ShardSet, where: str) -> Manifest:
    """The rows of the shards numbered ``numbers`` (``--shards``), or a UsageError naming those that do not exist."""
    names = list(source.shards) or source.df.get_column("shard").unique().to_list()
    by_number: dict[int | None, str] = {}
    for name in sorted(names, key=natural_key):
        if not dl.is_shard(name):
            continue
        number = shard_number(name)
        if number in by_number:  # e.g. train-00000-of-00002 and train-00001-of-00002: both "2"
            raise UsageError(
                f"--shards: {by_number[number]} and {name} both end in {number}, so shard numbers are ambiguous here",
                "select by row instead (`--where \"shard = 'data/...'\"`), or drop --shards",
            )
        by_number[number] = name
    wanted = numbers if isinstance(numbers, ShardSet) else ShardSet.of(numbers)
    missing = wanted.without(by_number)  # ranges, never expanded
    if missing.ranges:
        valid = format_shard_spec(n for n in by_number if n is not None)
        raise UsageError(
            f"--shards: {'shard' if len(missing) == 1 else 'shards'} {missing} not in {where}",
            f"this revision has shards {valid}" if valid else "this revision has no data/*.parquet shards",
        )
    keep = [by_number[n] for n in wanted.intersect(by_number)]
    return source.with_df(source.df.filter(pl.col("shard").is_in(keep)))


def _check_files(download: dl.DownloadPlan, manifest: Manifest, chosen: Sequence[str]) -> None:
    """Each chosen shard is on the Hub at the commit with the size and hash the index recorded."""
    remote = {p.remote.path: p.remote for p in download.files}
    for shard in chosen:
        f = remote.get(shard)
        info = manifest.shards.get(shard)
        if f is None:
            raise InputError(
                f"{shard} is not in {download.repo_id} at commit {download.commit[:12]}",
                "the manifest does not match the repo: re-create it from hf://datasets/" + download.repo_id,
            )
        if info is not None and (
            info.size != f.size or (info.etag is not None and info.etag not in (f.sha256, f.blob_id))
        ):
            raise InputError(
                f"{shard}: the index recorded {info.size:,} bytes / {info.etag}, the Hub lists {f.size:,} bytes "
                f"/ {f.expected_hash} at commit {download.commit[:12]}",
                "re-create the manifest (or clear the cfx cache) and plan again",
            )


def run_fetch(
    plan: FetchPlan,
    *,
    workers: int = dl.DEFAULT_WORKERS,
    verify: bool = False,
    token: str | None = None,
    reporter: Reporter | None = None,
) -> dl.DownloadResult:
    """Download the planned shards (and the small metadata files), verified and resumable."""
    return dl.run_plan(plan.download, workers=workers, verify=verify, token=token, reporter=reporter)


def local_manifest(plan: FetchPlan) -> Manifest:
    """The planned rows, pointing into the download folder, with fingerprints of the local files.

    Each shard must have the Hub's size and be recorded as verified (against the Hub's hash) for exactly
    this file (same size and mtime_ns) by the download; its fingerprint then takes the local mtime.
    """
    out = plan.download.out
    state = dl.DownloadState(out)
    remote = {p.remote.path: p.remote for p in plan.download.files}
    shards: dict[str, ShardInfo] = {}
    for shard in plan.chosen:
        local = out / shard
        try:
            st = local.stat()
        except FileNotFoundError:
            raise InputError(f"{local} is missing", "run the download again") from None
        expected = remote[shard]
        if st.st_size != expected.size or state.recorded_hash(shard, local) != expected.expected_hash:
            raise InputError(
                f"{local} is not the verified copy of {shard} at commit {plan.commit[:12]}",
                "run `cfx download` again (add --verify to re-hash every file)",
            )
        shards[shard] = ShardInfo(size=st.st_size, mtime_ns=st.st_mtime_ns)
    m = plan.manifest
    history = [*m.history, f"download {plan.repo_id}@{plan.commit} to {out}"]
    return Manifest(df=m.df, root=str(Path(os.path.abspath(out))), shards=shards, history=history)


def check_subset_out(plan: FetchPlan, subset_out: Path, overwrite: bool = False) -> None:
    """Refuse an unusable --subset-out before downloading anything (inside the download folder, exists...)."""
    rooted = Manifest(df=plan.manifest.df.head(0), root=str(Path(os.path.abspath(plan.download.out))))
    check_output(rooted, subset_out, overwrite)


def write_fetched_subset(
    plan: FetchPlan,
    subset_out: Path,
    *,
    overwrite: bool = False,
    command: str | None = None,
    reporter: Reporter | None = None,
) -> Any:
    """``write_subset`` over the downloaded shards: the same dataset ``cfx subset`` makes from a full copy."""
    return write_subset(
        local_manifest(plan),
        subset_out,
        overwrite=overwrite,
        command=command,
        selection=plan.selection,
        reporter=reporter,
    )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"
