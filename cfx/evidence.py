"""The evidence a written set carries in its dataset card, measured on the rows that were written.

``measure`` returns a JSON-able dict (the card's ``cfx_evidence`` YAML key) and ``render`` a short Markdown
table of it. Numbers come from the written manifest, never copied from the input: rows per label and split,
generators (generated rows only: a real row's ``model_name`` is its dataset), the shortcut audit's worst
single feature (and the joint canary when asked: it costs seconds), exact duplicates left, the leak proof per
split, the licence mix and the lineage. Only what dedupe removed is history by nature: it is read from the
``dedupe`` step the manifest records, with its threshold.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from cfx.defaults import DEDUPE_THRESHOLD
from cfx.errors import EmptySelectionError
from cfx.licenses import LICENSE_COLUMN
from cfx.lineage import describe
from cfx.manifest import Manifest
from cfx.schema import GENERATED, REAL

SPLIT_COLUMN = "assigned_split"  # what `cfx split` writes
_DEDUPE_STEP = re.compile(r"^dedupe threshold=(\d+)\b.*?(?:\bremoved=(\d+))?$")


def measure(
    manifest: Manifest, *, split_column: str | None = None, joint: bool = False, seed: int = 0
) -> dict[str, Any]:
    """The evidence of ``manifest`` (the rows as written). ``split_column``: the column the set is split by
    (default ``assigned_split`` when present); ``joint``: also fit the joint canary."""
    df = manifest.df
    column = split_column or (SPLIT_COLUMN if SPLIT_COLUMN in df.columns else None)
    out: dict[str, Any] = {**_label_counts(df), **_sources(df)}
    duplicates = _duplicates(df, manifest.history)
    if column is not None:
        out["splits"] = _splits(df, column)
        out["leak_proof"] = _leak_proof(df, column, duplicates.get("dedupe_threshold", DEDUPE_THRESHOLD))
    out["audit"] = _audit(manifest, joint, seed)
    out["duplicates"] = duplicates
    if LICENSE_COLUMN in df.columns:
        out["licenses"] = _counts(df, LICENSE_COLUMN)
    out["lineage"] = [describe(e) for e in manifest.lineage]
    return out


def _label_counts(df: pl.DataFrame) -> dict[str, int]:
    labels = df.get_column("label")
    return {
        "rows": df.height,
        "real": int((labels == REAL).sum()),
        "generated": int((labels == GENERATED).sum()),
    }


def _distinct(df: pl.DataFrame, column: str) -> int:
    return int(df.get_column(column).drop_nulls().n_unique()) if column in df.columns else 0


def _sources(df: pl.DataFrame) -> dict[str, int]:
    gen = df.filter(pl.col("label") == GENERATED)
    real = df.filter(pl.col("label") == REAL)
    return {"generators": _distinct(gen, "model_name"), "real_sources": _distinct(real, "real_source")}


def _counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    counts = df.group_by(pl.col(column).cast(pl.String).fill_null("(unknown)")).len().sort(["len", column])
    return {str(k): int(n) for k, n in reversed(counts.rows())}


def _splits(df: pl.DataFrame, column: str) -> dict[str, dict[str, int]]:
    return {
        str(name): _label_counts(part)
        for (name,), part in df.group_by(column, maintain_order=True)
        if name is not None
    }


def _shared(values: pl.Series, split: pl.Series) -> int:
    """Distinct values that occur in more than one split."""
    t = pl.DataFrame({"v": values, "s": split}).drop_nulls()
    return int(t.group_by("v").agg(pl.col("s").n_unique()).filter(pl.col("s") > 1).height)


def _source_facts(df: pl.DataFrame) -> pl.DataFrame:
    """Hash columns of the source bytes: after ``--transform`` they are kept as ``source_<name>``."""
    names = ("sha256", "phash", "near_uniform", "hash_error")
    return df.select(
        pl.col(f"source_{n}" if f"source_{n}" in df.columns else n).alias(n)
        for n in names
        if n in df.columns or f"source_{n}" in df.columns
    )


def _leak_proof(df: pl.DataFrame, column: str, threshold: int) -> dict[str, int]:
    """Values seen in two splits, recomputed from the written rows: identical images (sha256 of the source
    bytes), prompts, split groups, and near-identical images (pHash within ``threshold`` bits)."""
    from cfx.split import near_leaks, normalise_prompts

    split = df.get_column(column).cast(pl.String)
    facts = _source_facts(df)
    out: dict[str, int] = {}
    if "sha256" in facts.columns:
        out["exact"] = _shared(facts.get_column("sha256"), split)
    if "prompt" in df.columns:
        out["prompt"] = _shared(normalise_prompts(df.get_column("prompt")), split)
    if "split_group" in df.columns:
        out["group"] = _shared(df.get_column("split_group"), split)
    if "phash" in facts.columns:
        out["near"] = near_leaks(facts, split, threshold)
    return out


def _audit(manifest: Manifest, joint: bool, seed: int) -> dict[str, Any]:
    from cfx.audit import audit

    try:
        result = audit(manifest, joint=joint, seed=seed)
    except EmptySelectionError:
        return {"measured": False, "reason": "the written rows hold one label only"}
    worst = result.features[0] if result.features else None
    out: dict[str, Any] = {
        "measured": True,
        "threshold": result.threshold,
        "worst_feature": worst.feature if worst else None,
        "worst_auroc": round(worst.auroc, 4) if worst else None,
        "flagged": [f.feature for f in result.flagged],
    }
    if result.joint is not None:
        j = result.joint.to_json()
        out["joint_auroc"] = j.get("auroc")
        out["joint_flagged"] = j.get("flagged")
    return out


def _duplicates(df: pl.DataFrame, history: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    facts = _source_facts(df)
    if "sha256" in facts.columns:
        known = facts.get_column("sha256").drop_nulls()
        out["exact_left"] = int(known.len() - known.n_unique())
    steps = [m for m in (_DEDUPE_STEP.match(str(h)) for h in history) if m]
    if steps:
        last = steps[-1]
        out["dedupe_threshold"] = int(last.group(1))
        if last.group(2) is not None:
            out["dedupe_removed"] = int(last.group(2))
    return out


# --- Markdown ------------------------------------------------------------------------------------------
def render(ev: dict[str, Any]) -> str:
    """The card's Evidence section: a short table of ``ev`` (the same numbers as the ``cfx_evidence`` key)."""
    rows = [
        ("rows", f"{ev['rows']:,} ({ev['real']:,} real, {ev['generated']:,} generated)"),
        ("generators / real sources", f"{ev['generators']:,} / {ev['real_sources']:,}"),
    ]
    for name, c in ev.get("splits", {}).items():
        rows.append((f"split `{name}`", f"{c['rows']:,} ({c['real']:,} real, {c['generated']:,} generated)"))
    rows.append(("shortcut audit", _audit_text(ev["audit"])))
    if "joint_auroc" in ev["audit"]:
        rows.append(("joint canary", f"AUROC {ev['audit']['joint_auroc']:.3f}"))
    rows.append(("duplicates", _duplicates_text(ev["duplicates"])))
    if "leak_proof" in ev:
        proof = ev["leak_proof"]
        text = ", ".join(f"{v:,} {k}" for k, v in proof.items()) or "nothing to check"
        rows.append(
            ("values shared across splits", text + (" (leak-free)" if not any(proof.values()) else ""))
        )
    if "licenses" in ev:
        rows.append(("licences", ", ".join(f"`{k}` {v:,}" for k, v in list(ev["licenses"].items())[:8])))
    rows.append(("lineage", f"{len(ev['lineage'])} cfx command(s), listed under Provenance"))
    lines = [
        "## Evidence\n",
        "Measured on the rows written here (YAML key `cfx_evidence`).\n",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v.replace('|', chr(92) + '|')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _audit_text(a: dict[str, Any]) -> str:
    if not a.get("measured"):
        return f"not measured: {a.get('reason')}"
    worst = f"worst single feature `{a['worst_feature']}` AUROC {a['worst_auroc']:.3f}"
    flagged = a["flagged"]
    return worst + (
        f"; flagged (≥ {a['threshold']}): {', '.join(flagged)}" if flagged else "; nothing flagged"
    )


def _duplicates_text(d: dict[str, Any]) -> str:
    parts = []
    if "exact_left" in d:
        parts.append(f"{d['exact_left']:,} exact duplicate(s) left")
    if "dedupe_threshold" in d:
        removed = f"{d['dedupe_removed']:,} removed" if "dedupe_removed" in d else "deduplicated"
        parts.append(f"{removed} by `cfx dedupe` (pHash threshold {d['dedupe_threshold']})")
    return "; ".join(parts) or "not checked (run `cfx dedupe` before writing)"
