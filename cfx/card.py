"""The dataset card (README.md) of a written subset: Hub YAML header, counts, provenance, how to load it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import yaml

from cfx import evidence
from cfx.licenses import LICENSE_COLUMN, UNKNOWN
from cfx.lineage import describe
from cfx.manifest import Manifest
from cfx.schema import GENERATED, REAL
from cfx.stats import value_counts

SOURCE_CARD = "README.md"
_FRONT_RE = re.compile(r"^---\s*\n(.*?)\n---\s*(\n|$)", re.S)
TOP_GENERATORS = 50


@dataclass
class CardInfo:
    title: str
    schema: pa.Schema
    manifest: Manifest  # of the written dataset
    files: Sequence[Any]  # WrittenFile: name, rows, bytes
    source_root: str
    source_history: list[str]
    licenses: list[str]
    command: str | None
    selection: str | None
    order: str
    seed: int
    cfx_version: str
    transforms: str | None = None  # the --transform pipeline (cfx.transform.Pipeline.spec)
    skipped: int = 0  # images --skip-bad left out because they could not be transformed
    splits: list[tuple[str, int]] | None = None  # (name, rows) per Hub split; None: one split "train"
    evidence: dict[str, Any] | None = None  # cfx.evidence.measure of the written rows


# --- licences -----------------------------------------------------------------------------------------
def normalize_license(name: str) -> str:
    """``CreativeML OpenRAIL-M`` → ``creativeml-openrail-m`` (the Hub's identifier style)."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def read_front_matter(text: str) -> dict[str, Any]:
    m = _FRONT_RE.match(text)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _source_card_text(root: str) -> str | None:
    """The source dataset's README.md: a local file, or the Hub repo's at the manifest's revision."""
    if root.startswith("hf://"):
        try:
            from huggingface_hub import HfFileSystem

            from cfx.sources import HubSpec

            hub = HubSpec.parse(root)
            with HfFileSystem().open(f"datasets/{hub.repo_id}@{hub.revision}/{SOURCE_CARD}", "r") as fh:
                return str(fh.read())
        except Exception:
            return None
    try:
        return (Path(root) / SOURCE_CARD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def source_licenses(source: Manifest, selected: pl.DataFrame) -> list[str]:
    """The source card's licence(s), then every licence in the selected rows' ``license`` column."""
    out: list[str] = []
    text = _source_card_text(source.root)
    if text:
        lic = read_front_matter(text).get("license")
        values = lic if isinstance(lic, list) else [lic] if lic else []
        out.extend(normalize_license(str(v)) for v in values)
    if LICENSE_COLUMN in selected.columns:
        found = selected.get_column(LICENSE_COLUMN).drop_nulls().cast(pl.String).unique().sort().to_list()
        out.extend(normalize_license(v) for v in found if v.strip() and v != UNKNOWN)
    return list(dict.fromkeys(out))


# --- YAML -------------------------------------------------------------------------------------------
_DTYPES = {
    pa.string(): "string",
    pa.large_string(): "large_string",
    pa.binary(): "binary",
    pa.large_binary(): "large_binary",
    pa.bool_(): "bool",
    pa.int8(): "int8",
    pa.int16(): "int16",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.uint8(): "uint8",
    pa.uint16(): "uint16",
    pa.uint32(): "uint32",
    pa.uint64(): "uint64",
    pa.float16(): "float16",
    pa.float32(): "float32",
    pa.float64(): "float64",
}


def features(schema: pa.Schema) -> list[dict[str, Any]] | None:
    """``dataset_info.features`` for flat schemas; None when a column has a type without a plain dtype."""
    out: list[dict[str, Any]] = []
    for f in schema:
        if pa.types.is_list(f.type) and f.type.value_type in _DTYPES:  # the real shards' list resolution
            out.append({"name": f.name, "list": _DTYPES[f.type.value_type]})
            continue
        dtype = _DTYPES.get(f.type)
        if dtype is None:
            return None
        out.append({"name": f.name, "dtype": dtype})
    return out


def _size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def card_yaml(info: CardInfo) -> dict[str, Any]:
    rows = len(info.manifest)
    splits = info.splits or [("train", rows)]
    lic: Any = info.licenses[0] if len(info.licenses) == 1 else info.licenses or "unknown"
    data: dict[str, Any] = {
        "license": lic,
        "pretty_name": info.title,
        "task_categories": ["image-classification"],
        "tags": ["image-forensics", "synthetic-image-detection", "community-forensics", "cfx"],
        "size_categories": [_size_category(rows)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*.parquet"} for name, _ in splits],
            }
        ],
    }
    feats = features(info.schema)
    dataset_info: dict[str, Any] = {}
    if feats is not None:
        dataset_info["features"] = feats
    sizes = {name: _split_bytes(info, name) for name, _ in splits}
    dataset_info["splits"] = [
        {"name": name, "num_bytes": sizes[name], "num_examples": n} for name, n in splits
    ]
    dataset_info["download_size"] = sum(f.bytes for f in info.files)
    dataset_info["dataset_size"] = sum(sizes.values())
    data["dataset_info"] = dataset_info
    if info.evidence is not None:
        data["cfx_evidence"] = info.evidence
    return data


def _split_bytes(info: CardInfo, name: str) -> int:
    """A split's uncompressed data size (the row groups' total_byte_size: what ``datasets`` calls num_bytes)."""
    files = [f for f in info.files if f.name.startswith(f"data/{name}-")] if info.splits else info.files
    return sum(getattr(f, "data_bytes", f.bytes) for f in files)


# --- body ---------------------------------------------------------------------------------------------
def _table(title: str, rows: list[tuple[str, int, int, int]], limit: int | None = None) -> str:
    shown = rows[:limit] if limit else rows
    lines = [f"### By {title}", "", f"| {title} | rows | real | generated |", "|---|---:|---:|---:|"]
    lines += [f"| {_cell(v)} | {n:,} | {r:,} | {g:,} |" for v, n, r, g in shown]
    if limit and len(rows) > limit:
        rest = rows[limit:]
        lines.append(f"| … {len(rest):,} more | {sum(x[1] for x in rest):,} | | |")
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    return value.replace("|", "\\|") or "(empty)"


def _source_text(root: str) -> str:
    if root.startswith("hf://datasets/"):
        repo_rev = root[len("hf://datasets/") :]
        repo, _, rev = repo_rev.partition("@")
        return f"Hub dataset [`{repo}`](https://huggingface.co/datasets/{repo}) at revision `{rev or 'main'}`"
    return f"local folder `{root}`"


def _extra_columns(schema: pa.Schema) -> str:
    extra = [n for n in ("source_shard", "source_row") if n in schema.names]
    return f" (plus {' and '.join(f'`{n}`' for n in extra)}: where each row was copied from)" if extra else ""


def _transforms_section(info: CardInfo) -> str:
    lines = [
        "## Transforms\n",
        f"Every image was transformed on write, in this order: `{info.transforms}` (seed {info.seed}; random "
        "draws are seeded per source row, so the same source, transforms and seed give the same bytes).",
        "The `format`, `resolution` and `mode` columns (and the extension in `image_name`) describe the new "
        "bytes. `manifest.parquet` keeps the source values (`source_format`, `source_resolution`, "
        "`source_mode`, `source_image_name`, `source_num_bytes`), the transform applied to each row "
        "(`transform`) and the SHA-256 of the source image (`source_sha256`).",
    ]
    if info.skipped:
        lines.append(
            f"{info.skipped:,} selected image(s) could not be transformed and were left out (--skip-bad)."
        )
    return "\n".join(lines) + "\n"


def render_card(info: CardInfo) -> str:
    df = info.manifest.df
    rows = df.height
    real = int((df.get_column("label") == REAL).sum())
    gen = int((df.get_column("label") == GENERATED).sum())
    gens = df.filter(pl.col("label") == GENERATED).get_column("model_name").n_unique() if gen else 0
    header = yaml.safe_dump(card_yaml(info), sort_keys=False, allow_unicode=True, width=1000)
    first = info.files[0].name if info.files else "data/train-00000-of-00001.parquet"
    parts = [
        f"---\n{header}---\n",
        f"# {info.title}\n",
        f"A subset of the Community Forensics dataset written by cfx {info.cfx_version}: "
        f"{rows:,} images ({real:,} real, {gen:,} generated by {gens:,} generators) in "
        f"{len(info.files)} parquet file(s) under `data/`. The columns, their types and order are exactly the "
        f"source's{_extra_columns(info.schema)}, and "
        + (
            "the images were transformed on write (see Transforms).\n"
            if info.transforms
            else "the encoded images are byte-identical to the source rows.\n"
        ),
        "## Provenance\n",
        f"- Source: {_source_text(info.source_root)}",
        f"- Selection: {info.selection or 'all rows of the source manifest'}",
        f"- Row order: {info.order}" + (f" (seed {info.seed})" if info.order == "shuffle" else ""),
        f"- Made with: cfx {info.cfx_version}",
    ]
    if info.command:
        parts.append(f"- Command:\n\n  ```\n  {info.command}\n  ```")
    if info.source_history:
        parts.append("- Source manifest history: " + "; ".join(f"`{h}`" for h in info.source_history))
    if info.manifest.lineage:
        parts.append("- Lineage (the cfx commands that made this set, first to last):\n")
        parts += [f"  {i}. `{describe(e)}`" for i, e in enumerate(info.manifest.lineage, 1)]
        parts.append("")
    parts.append(
        "- `manifest.parquet` lists every row with its metadata and `source_shard` / `source_row`, "
        "the row it was copied from.\n"
    )
    if info.evidence is not None:
        parts.append(evidence.render(info.evidence))
    if info.transforms:
        parts.append(_transforms_section(info))
    parts.append("## Licence\n")
    if info.licenses:
        parts.append(
            "Inherited from the source collection and from the generators of the selected images: "
            + ", ".join(f"`{x}`" for x in info.licenses)
            + ". Each image keeps the licence of the generator (or real source) it comes from.\n"
        )
    else:
        parts.append("Unknown: the source card names no licence. Check the source before redistributing.\n")
    if LICENSE_COLUMN in df.columns:
        lic = (
            df.filter(pl.col("label") == GENERATED)
            .group_by("model_name", LICENSE_COLUMN)
            .len()
            .sort(["len", "model_name"], descending=[True, False])
        )
        lines = ["| generator | licence | rows |", "|---|---|---:|"]
        lines += [
            f"| {_cell(str(m))} | {_cell(str(x or '(unknown)'))} | {n:,} |" for m, x, n in lic.iter_rows()
        ]
        parts.append("\n".join(lines) + "\n")
    parts.append("## Contents\n")
    parts.append(_table("label", value_counts(df, "label")))
    parts.append(_table("architecture", value_counts(df, "architecture")))
    parts.append(
        _table(
            "generator", value_counts(df.filter(pl.col("label") == GENERATED), "model_name"), TOP_GENERATORS
        )
    )
    if real:
        parts.append(_table("real source", value_counts(df.filter(pl.col("label") == REAL), "real_source")))
    files = ["| file | rows | bytes |", "|---|---:|---:|"]
    files += [f"| `{f.name}` | {f.rows:,} | {f.bytes:,} |" for f in info.files]
    parts.append("### Files\n\n" + "\n".join(files) + "\n")
    parts.append(
        "## Loading\n\n"
        "```python\n"
        "from datasets import load_dataset\n\n"
        + (
            f'ds = load_dataset("parquet", data_dir="data")  # DatasetDict: {", ".join(n for n, _ in info.splits)}\n'
            if info.splits
            else 'ds = load_dataset("parquet", data_dir="data", split="train")\n'
        )
        + "```\n\n"
        "Or row group by row group, without loading a whole file:\n\n"
        "```python\n"
        "import io\n\n"
        "import pyarrow.parquet as pq\n"
        "from PIL import Image\n\n"
        f'pf = pq.ParquetFile("{first}")\n'
        "for i in range(pf.num_row_groups):\n"
        "    for row in pf.read_row_group(i).to_pylist():\n"
        '        image = Image.open(io.BytesIO(row["image_data"]))\n'
        "```\n"
    )
    return "\n".join(parts)
