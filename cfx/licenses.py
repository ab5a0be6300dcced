"""Licences: read the generator licence table, map real sources to licences, annotate and filter manifests.

Generated rows get their licence from the table the dataset ships in ``data/metadata`` (CSV, JSON/JSONL or
parquet; the model-name and licence columns are found by their usual names). Real rows get theirs from
``real_source`` through a built-in table (``cfx/data/real_sources.csv``, one documented source per entry),
which a user file can extend or override. What no table knows stays ``unknown``: it is reported, never guessed.

Licence ids are normalised to SPDX-like lower-case ids (``creativeml-openrail-m``, ``apache-2.0``,
``cc-by-nc-4.0``); the raw value is kept beside them in ``license_raw``.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from cfx.errors import InputError, UsageError
from cfx.manifest import Manifest
from cfx.outputs import metadata_folders
from cfx.progress import NullReporter, Reporter
from cfx.schema import GENERATED, REAL

UNKNOWN = "unknown"
LICENSE_COLUMN = "license"
LICENSE_RAW_COLUMN = "license_raw"
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet")

# Column names tried in order when the caller does not name the columns (compared after _norm_col).
MODEL_COLUMNS = (
    "model_name",
    "model",
    "model_id",
    "generator",
    "generator_name",
    "repo_id",
    "repo",
    "repository",
    "hf_id",
    "huggingface_id",
    "model_repo",
    "name",
)
LICENSE_COLUMNS = (
    "license",
    "licence",
    "license_id",
    "licence_id",
    "license_name",
    "licence_name",
    "license_type",
    "licence_type",
    "spdx",
    "spdx_id",
)
SOURCE_COLUMNS = ("real_source", "source", "dataset", "dataset_name", "name")

_EMPTY_WORDS = {"", "unknown", "none", "null", "nan", "n/a", "na", "?", "-", "unspecified", "not specified"}

# --- normalisation -----------------------------------------------------------------------------------
_CC_URL = re.compile(r"creativecommons\.org/licenses/([a-z-]+)/(\d(?:\.\d)?)")
_CC0_URL = re.compile(r"creativecommons\.org/publicdomain/zero/(\d\.\d)")
_WORDS = (
    (r"\blicen[cs]e[sd]?\b", " "),
    (r"\bcreative\s*commons\b", "cc"),
    (r"\battribution\b", "by"),
    (r"\bnon[\s-]?commercial\b", "nc"),
    (r"\bshare[\s-]?alike\b", "sa"),
    (r"\bno[\s-]?deriv(?:ative)?s?\b", "nd"),
    (r"\b(?:international|generic|unported|version|the)\b", " "),
    (r"\bv(?=\d)", ""),  # "v2.0" -> "2.0"
)
_ALIASES = {
    "apache": "apache-2.0",
    "apache-2": "apache-2.0",
    "apache2": "apache-2.0",
    "apache2.0": "apache-2.0",
    "mit-license": "mit",
    "cc0": "cc0-1.0",
    "cc-0": "cc0-1.0",
    "cc0-1": "cc0-1.0",
    "cc-zero": "cc0-1.0",
    "public-domain": "public-domain",
    "pd": "public-domain",
    "creativeml-open-rail-m": "creativeml-openrail-m",
    "creative-ml-openrail-m": "creativeml-openrail-m",
    "creativeml-openrail": "creativeml-openrail-m",
    "openrail-m-creativeml": "creativeml-openrail-m",
    "open-rail-m": "openrail-m",
    "openrail-plus-plus": "openrail++",
    "openrail++-m": "openrail++",
    "bigscience-openrail": "bigscience-openrail-m",
    "gplv3": "gpl-3.0",
    "gpl-3": "gpl-3.0",
    "gplv2": "gpl-2.0",
    "gpl-2": "gpl-2.0",
    "agplv3": "agpl-3.0",
    "agpl-3": "agpl-3.0",
    "bsd-3": "bsd-3-clause",
    "bsd-2": "bsd-2-clause",
}


def normalize_license(raw: Any) -> str:
    """An SPDX-like lower-case id for a licence as written anywhere ('CC BY-NC 4.0' -> 'cc-by-nc-4.0').

    Empty, missing and placeholder values ('', 'N/A', 'unknown', None) give ``unknown``.
    """
    if raw is None:
        return UNKNOWN
    s = str(raw).strip().lower()
    if s in _EMPTY_WORDS:
        return UNKNOWN
    m = _CC_URL.search(s)
    if m:
        version = m.group(2) if "." in m.group(2) else f"{m.group(2)}.0"
        return f"cc-{m.group(1)}-{version}"
    m = _CC0_URL.search(s)
    if m:
        return f"cc0-{m.group(1)}"
    s = s.replace("licence", "license")
    for pattern, repl in _WORDS:
        s = re.sub(pattern, repl, s)
    s = re.sub(r"[\s_/,;:()\[\]\"']+", "-", s)
    s = re.sub(r"-{2,}", "-", s).strip("-.")
    if not s or s in _EMPTY_WORDS:
        return UNKNOWN
    s = _ALIASES.get(s, s)
    # Creative Commons ids: "cc-by-nc-4" -> "cc-by-nc-4.0", "ccby" -> "cc-by"
    s = re.sub(r"^cc-?(by|0)\b", lambda m: "cc0" if m.group(1) == "0" else "cc-by", s)
    if s.startswith("cc-by") or s.startswith("cc0"):
        s = re.sub(r"-(\d)$", r"-\1.0", s)
    return _ALIASES.get(s, s)


# --- what a licence allows ---------------------------------------------------------------------------
_COMMERCIAL_WORDS = """
    apache-2.0 mit bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear isc zlib unlicense wtfpl
    cc0-1.0 public-domain pddl odc-by odbl cdla-permissive-1.0 cdla-permissive-2.0 cdla-sharing-1.0
    mpl-2.0 epl-1.0 epl-2.0 ecl-2.0 eupl-1.1 eupl-1.2 afl-3.0 artistic-2.0 bsl-1.0 ms-pl osl-3.0
    postgresql ofl-1.1 ncsa gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 lgpl-lr agpl-3.0 gfdl
    unsplash
"""
_COMMERCIAL_IDS = set(_COMMERCIAL_WORDS.split()) | {
    # OpenRAIL licences allow commercial use (with use-based restrictions passed on downstream).
    "openrail",
    "openrail-m",
    "openrail++",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "bigcode-openrail-m",
    "bigscience-bloom-rail-1.0",
}
# Ids as normalize_license writes them (the word "license" is dropped: "deepfloyd-if-license" -> "deepfloyd-if").
_NONCOMMERCIAL_IDS = {"deepfloyd-if", "flux-1-dev-non-commercial", "stable-video-diffusion-nc-community"}
_SHARE_ALIKE_IDS = {"odbl", "cdla-sharing-1.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "agpl-3.0"}


def license_flags(license_id: str) -> dict[str, bool | None]:
    """What a normalised licence id allows: ``commercial`` (True / False / None = not known),
    ``non_commercial`` (known to forbid commercial use), ``share_alike`` (derivatives must keep the licence)
    and ``unknown`` (no licence known at all)."""
    lid = normalize_license(license_id)
    parts = set(lid.split("-"))
    non_commercial = (
        lid in _NONCOMMERCIAL_IDS
        or "nc" in parts
        or "noncommercial" in parts
        or "non-commercial" in lid
        or "research-only" in lid
    )
    commercial: bool | None
    if non_commercial:
        commercial = False
    elif lid in _COMMERCIAL_IDS or (lid.startswith("cc-by") and "nc" not in parts):
        commercial = True
    else:
        commercial = None  # unknown, 'other', per-image licences, custom terms
    share_alike = lid in _SHARE_ALIKE_IDS or (lid.startswith("cc-") and "sa" in parts)
    return {
        "commercial": commercial,
        "non_commercial": non_commercial,
        "share_alike": share_alike,
        "unknown": lid == UNKNOWN,
    }


def is_commercial(license_id: str) -> bool:
    """True only for licences known to allow commercial use."""
    return license_flags(license_id)["commercial"] is True


# --- reading tables ----------------------------------------------------------------------------------
def _norm_col(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


def _norm_key(name: Any) -> str:
    """How table keys and manifest values are compared: case, spaces, URL prefix and punctuation ignored."""
    s = str(name).strip().lower()
    s = re.sub(r"^https?://(?:www\.)?huggingface\.co/", "", s)
    s = s.strip("/")
    return re.sub(r"[\s_\-.]+", "", s)


TABLE_FORMATS = "CSV, TSV, JSON, JSONL (UTF-8 text) or parquet"
_SNIFF_BYTES = 64 * 1024


def read_table_file(path: Path) -> pl.DataFrame:
    """Read a small CSV/TSV, JSON/JSONL or parquet table into a frame of strings; errors name the file.

    The kind is decided by the content (a parquet file named .csv is read as parquet; a binary file named
    .csv is refused), the suffix only tells CSV from TSV and JSON from JSONL.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"licence table {path} does not exist", "check the path")
    if path.is_dir():
        raise InputError(f"licence table {path} is a folder", "pass the table file inside it")
    kind = _sniff_table(path)
    suffix = path.suffix.lower()
    try:
        if kind == "parquet":
            df = _read_parquet_table(path)
        elif suffix in (".json", ".jsonl", ".ndjson") or kind == "json":
            df = _read_json(path)
        elif suffix in (".csv", ".tsv", ".txt", ""):
            df = pl.read_csv(
                path,
                separator="\t" if suffix == ".tsv" else ",",
                infer_schema=False,
                truncate_ragged_lines=False,
            )
        else:
            raise InputError(
                f"licence table {path}: unsupported file type {suffix!r}", f"use {TABLE_FORMATS}"
            )
        return df.select([pl.col(c).cast(pl.String, strict=False) for c in df.columns])
    except InputError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"licence table {path} is malformed ({first[:200]})",
            "fix the file, or pass another with --license-table",
        ) from None


def _sniff_table(path: Path) -> str:
    """``parquet``, ``json`` or ``text`` from the first bytes; a binary file is an InputError naming it."""
    from cfx.formats import sniff_format

    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(
            f"licence table {path}: cannot read it ({exc.strerror or exc})", "check the path"
        ) from None
    if head.startswith(b"PAR1"):
        return "parquet"
    what = None
    if head.startswith((b"ARROW1", b"\xff\xff\xff\xff")):
        what = "an Arrow IPC file (a cfx manifest stream?)"
    elif sniff_format(head):
        what = f"a {sniff_format(head)} image"
    elif b"\x00" in head or not _is_utf8(head):
        what = "binary data"
    if what:
        raise InputError(f"licence table {path} is {what}, not a table", f"pass a table as {TABLE_FORMATS}")
    return "json" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{") else "text"


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and len(head) == _SNIFF_BYTES  # a character cut by the read
    return True


def _read_parquet_table(path: Path) -> pl.DataFrame:
    """A parquet table; binary columns mean it is no licence table (e.g. a dataset shard)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    binary = [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if binary:
        shard = " (a dataset shard?)" if "image_data" in binary else ""
        raise InputError(
            f"licence table {path} is a parquet file with binary column(s) {', '.join(binary)}{shard}, "
            "not a licence table",
            f"pass a table of model names and licences as {TABLE_FORMATS}",
        )
    return pl.read_parquet(path)


def _read_json(path: Path) -> pl.DataFrame:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        records = _json_records(data)
    if not records:
        return pl.DataFrame()
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("expected a list of objects")
    flat = [{k: None if v is None else _scalar(v) for k, v in r.items()} for r in records]
    return pl.DataFrame(flat, infer_schema_length=None)


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _json_records(data: Any) -> list[Any]:
    """Accept a list of objects, a columnar dict, a {name: licence} map, {name: {...}} or {"key": [objects]}."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise ValueError("expected a JSON list or object")
    values = list(data.values())
    if values and all(isinstance(v, list) for v in values):
        lengths = {len(v) for v in values}
        if len(values) == 1 and values[0] and isinstance(values[0][0], dict):
            return values[0]
        if len(lengths) == 1:
            keys = list(data)
            return [dict(zip(keys, row, strict=True)) for row in zip(*values, strict=True)]
    if values and all(isinstance(v, (str, type(None))) for v in values):
        return [{"model_name": k, "license": v} for k, v in data.items()]
    if values and all(isinstance(v, dict) for v in values):
        return [{"model_name": k, **v} for k, v in data.items()]
    raise ValueError("unrecognised JSON layout (want a list of objects or a {model: licence} map)")


def _pick_column(
    df: pl.DataFrame,
    given: str | None,
    candidates: Sequence[str],
    what: str,
    option: str,
    path: Path,
    hint: str | None = None,
) -> str:
    found = ", ".join(df.columns) or "(none)"
    if given is not None:
        if given in df.columns:
            return given
        by_norm = {_norm_col(c): c for c in df.columns}
        if _norm_col(given) in by_norm:
            return by_norm[_norm_col(given)]
        raise InputError(
            f"licence table {path} has no column {given!r} ({option}); columns found: {found}",
            f"pass {option} with one of the columns found",
        )
    by_norm = {_norm_col(c): c for c in df.columns}
    for cand in candidates:
        if cand in by_norm:
            return by_norm[cand]
    raise InputError(
        f"licence table {path}: cannot find the {what} column; columns found: {found}",
        hint or f"name it with {option} COLUMN (looked for: {', '.join(candidates[:6])}, …)",
    )


@dataclass
class LicenseTable:
    """Model (or real source) name -> raw licence, as read from one or more files."""

    entries: dict[str, str | None] = field(default_factory=dict)  # normalised key -> raw licence
    names: dict[str, str] = field(default_factory=dict)  # normalised key -> name as written
    sources: list[str] = field(default_factory=list)  # files read
    key_column: str = "model_name"
    license_column: str = "license"
    conflicts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, name: Any) -> tuple[bool, str | None]:
        """(found, raw licence) for a model name or source as written in the manifest."""
        if name is None:
            return False, None
        key = _norm_key(name)
        if key in self.entries:
            return True, self.entries[key]
        return False, None

    def merge(self, other: LicenseTable, override: bool = False) -> LicenseTable:
        out = LicenseTable(
            entries=dict(self.entries),
            names=dict(self.names),
            sources=[*self.sources, *other.sources],
            key_column=self.key_column,
            license_column=self.license_column,
            conflicts=[*self.conflicts, *other.conflicts],
        )
        for key, raw in other.entries.items():
            if key in out.entries and not override:
                if normalize_license(out.entries[key]) != normalize_license(raw):
                    out.conflicts.append(
                        f"{other.names[key]}: {out.entries[key]!r} kept, {raw!r} in {other.sources[-1]} ignored"
                    )
                continue
            out.entries[key] = raw
            out.names[key] = other.names[key]
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "files": self.sources,
            "key_column": self.key_column,
            "license_column": self.license_column,
            "entries": len(self.entries),
        }


def _table_from_frame(df: pl.DataFrame, path: Path, key_col: str, lic_col: str, label: str) -> LicenseTable:
    table = LicenseTable(sources=[str(path)], key_column=key_col, license_column=lic_col)
    for name, raw in df.select(key_col, lic_col).iter_rows():
        if name is None or not str(name).strip():
            continue
        key = _norm_key(name)
        raw = raw.strip() if isinstance(raw, str) else raw
        if key in table.entries:
            if normalize_license(table.entries[key]) != normalize_license(raw):
                table.conflicts.append(
                    f"{name}: {table.entries[key]!r} kept, later {label} row {raw!r} in {path} ignored"
                )
            continue
        table.entries[key] = raw
        table.names[key] = str(name).strip()
    if not table.entries:
        raise InputError(
            f"licence table {path} has no usable rows (column {key_col!r} is empty)",
            "check the file, or name the right column with --model-column",
        )
    return table


def load_license_table(
    path: Path | str, model_column: str | None = None, license_column: str | None = None
) -> LicenseTable:
    """Read a generator licence table (CSV/TSV, JSON/JSONL, parquet), finding its columns by common names."""
    path = Path(path)
    df = read_table_file(path)
    if df.height == 0:
        raise InputError(
            f"licence table {path} is empty; columns found: {', '.join(df.columns) or '(none)'}",
            "pass a table with one row per generator",
        )
    mcol = _pick_column(df, model_column, MODEL_COLUMNS, "model-name", "--model-column", path)
    lcol = _pick_column(df, license_column, LICENSE_COLUMNS, "licence", "--license-column", path)
    if mcol == lcol:
        raise InputError(
            f"licence table {path}: model and licence column are both {mcol!r}",
            "name them with --model-column and --license-column",
        )
    return _table_from_frame(df, path, mcol, lcol, "generator")


def find_metadata_tables(root: str, token: str | None = None) -> list[str]:
    """Table files under ``<root>/data/metadata`` (or ``<root>/metadata``) of a local or hf:// dataset root."""
    if root.startswith("hf://"):
        return _hub_metadata_files(root, token)
    base = Path(root)
    out: list[str] = []
    for folder in metadata_folders(base):  # one list: cfx.outputs also guards these as inputs
        if folder.is_dir():
            out.extend(
                str(p)
                for p in sorted(folder.rglob("*"))
                if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
            )
    return out


def _hub_metadata_files(root: str, token: str | None) -> list[str]:
    from cfx.download import resolve_repo
    from cfx.sources import HubSpec

    hub = HubSpec.parse(root)
    commit, files = resolve_repo(hub.repo_id, hub.revision, token=token)
    return [
        f"hf://datasets/{hub.repo_id}@{commit}/{f.path}"
        for f in files
        if f.path.startswith(("data/metadata/", "metadata/"))
        and Path(f.path).suffix.lower() in TABLE_SUFFIXES
    ]


def _fetch(path: str, token: str | None) -> Path:
    """A local path for a table: itself, or a Hub file downloaded into the Hugging Face cache."""
    if not path.startswith("hf://"):
        return Path(path)
    from huggingface_hub import hf_hub_download

    from cfx.errors import NetworkError
    from cfx.sources import HubSpec

    root, _, rel = path.partition("@")
    revision, _, filename = rel.partition("/")
    hub = HubSpec.parse(root)
    try:
        return Path(
            hf_hub_download(hub.repo_id, filename, repo_type="dataset", revision=revision, token=token)
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NetworkError(
            f"cannot download the licence table {filename} of {hub.repo_id}: {first}",
            "check the network and HF_ENDPOINT, or pass a local copy with --license-table FILE",
        ) from None


def dataset_license_table(
    root: str, *, token: str | None = None, reporter: Reporter | None = None
) -> LicenseTable | None:
    """The generator licence table shipped with the dataset at ``root``, or None (with a warning) if absent.

    Every table file under ``data/metadata`` with recognisable columns is read; files without a model-name
    or licence column are skipped with a warning. If no file is usable, the first file's error is raised.
    """
    reporter = reporter or NullReporter()
    if not root.startswith("hf://") and not Path(root).is_dir():
        reporter.warn(
            f"dataset root {root} is not available, so its licence table cannot be read; "
            "generator licences are unknown — pass --license-table FILE"
        )
        return None
    files = find_metadata_tables(root, token)
    if not files:
        reporter.warn(
            f"no licence table found under {root}/data/metadata; every generator's licence is unknown — "
            "pass --license-table FILE"
        )
        return None
    table: LicenseTable | None = None
    errors: list[InputError] = []
    for f in files:
        try:
            part = load_license_table(_fetch(f, token))
        except InputError as exc:
            errors.append(exc)
            continue
        part.sources = [f]
        table = part if table is None else table.merge(part)
    if table is None:
        raise errors[0]
    for err in errors:
        reporter.warn(f"skipped {err.message}")
    for c in table.conflicts:
        reporter.warn(f"licence table conflict: {c}")
    return table


# --- real sources ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealSource:
    name: str
    license: str
    license_raw: str
    source: str
    note: str = ""


def builtin_real_sources() -> list[RealSource]:
    """The documented built-in table of real-image sources (``cfx/data/real_sources.csv``)."""
    text = resources.files("cfx").joinpath("data/real_sources.csv").read_text(encoding="utf-8")
    df = pl.read_csv(io.StringIO(text), infer_schema=False)
    return [
        RealSource(
            name=r["real_source"],
            license=normalize_license(r["license"]),
            license_raw=r["license_raw"] or "",
            source=r["source"] or "",
            note=r["note"] or "",
        )
        for r in df.iter_rows(named=True)
    ]


def real_license_table(path: Path | str | None = None) -> LicenseTable:
    """Built-in real-source licences, extended/overridden by the user's table at ``path`` (if given)."""
    df = pl.read_csv(
        io.StringIO(resources.files("cfx").joinpath("data/real_sources.csv").read_text(encoding="utf-8")),
        infer_schema=False,
    )
    table = LicenseTable(sources=["(built-in)"], key_column="real_source", license_column="license")
    for r in df.iter_rows(named=True):
        names = [r["real_source"], *[a for a in (r["aliases"] or "").split(";") if a.strip()]]
        for name in names:
            key = _norm_key(name)
            table.entries[key] = r["license"]
            table.names[key] = r["real_source"]
    if path is None:
        return table
    path = Path(path)
    user = read_table_file(path)
    if user.height == 0:
        raise InputError(
            f"real-source licence table {path} is empty; columns found: {', '.join(user.columns) or '(none)'}",
            "pass a table with one row per real source",
        )
    hint = "give the file a 'real_source' column and a 'license' column"
    scol = _pick_column(user, None, SOURCE_COLUMNS, "real-source", "", path, hint)
    lcol = _pick_column(user, None, LICENSE_COLUMNS, "licence", "", path, hint)
    return table.merge(_table_from_frame(user, path, scol, lcol, "source"), override=True)


# --- annotate ----------------------------------------------------------------------------------------
@dataclass
class LicenseInfo:
    """What annotation used and could not resolve (for reports)."""

    table: LicenseTable | None
    real_table: LicenseTable
    missing_generators: dict[str, int] = field(default_factory=dict)  # model_name -> generated rows
    unknown_real_sources: dict[str, int] = field(default_factory=dict)  # real_source -> real rows


def annotate_licenses(
    manifest: Manifest,
    table: LicenseTable | None = None,
    real_table: LicenseTable | None = None,
    *,
    find_table: bool = True,
    token: str | None = None,
    reporter: Reporter | None = None,
) -> Manifest:
    """Add ``license`` (normalised id) and ``license_raw`` columns. See ``annotate_licenses_info``."""
    return annotate_licenses_info(
        manifest, table, real_table, find_table=find_table, token=token, reporter=reporter
    )[0]


def annotate_licenses_info(
    manifest: Manifest,
    table: LicenseTable | None = None,
    real_table: LicenseTable | None = None,
    *,
    find_table: bool = True,
    token: str | None = None,
    reporter: Reporter | None = None,
) -> tuple[Manifest, LicenseInfo]:
    """Annotate generated rows from the generator table (found under the dataset root unless given) and real
    rows from the real-source table. Rows no table knows get ``unknown`` (and a null ``license_raw``)."""
    reporter = reporter or NullReporter()
    if table is None and find_table:
        table = dataset_license_table(manifest.root, token=token, reporter=reporter)
    real_table = real_table or real_license_table()
    df = manifest.df
    info = LicenseInfo(table=table, real_table=real_table)

    def mapping(column: str, label: int, tbl: LicenseTable | None, missing: dict[str, int]) -> pl.DataFrame:
        counts = (
            df.filter(pl.col("label") == label)
            .group_by(column)
            .len()
            .sort(column, nulls_last=True)
            .iter_rows()
        )
        rows = []
        for name, n in counts:
            found, raw = tbl.lookup(name) if tbl is not None else (False, None)
            if not found:
                missing[name if name is not None else "(null)"] = n
            rows.append((name, label, normalize_license(raw) if found else UNKNOWN, raw if found else None))
        return pl.DataFrame(
            rows,
            schema={column: pl.String, "label": pl.Int8, "__lic": pl.String, "__raw": pl.String},
            orient="row",
        )

    gen_map = mapping("model_name", GENERATED, table, info.missing_generators)
    real_map = mapping("real_source", REAL, real_table, info.unknown_real_sources)
    base = df.drop([c for c in (LICENSE_COLUMN, LICENSE_RAW_COLUMN) if c in df.columns])
    label_dtype = base.schema["label"]
    out = (
        base.with_row_index("__i")
        .join(
            gen_map.with_columns(pl.col("label").cast(label_dtype)),
            on=["model_name", "label"],
            how="left",
            nulls_equal=True,
        )
        .join(
            real_map.with_columns(pl.col("label").cast(label_dtype)).rename(
                {"__lic": "__lic_r", "__raw": "__raw_r"}
            ),
            on=["real_source", "label"],
            how="left",
            nulls_equal=True,
        )
        .sort("__i")
        .with_columns(
            pl.coalesce("__lic", "__lic_r", pl.lit(UNKNOWN)).alias(LICENSE_COLUMN),
            pl.coalesce("__raw", "__raw_r").alias(LICENSE_RAW_COLUMN),
        )
        .drop("__i", "__lic", "__raw", "__lic_r", "__raw_r")
    )
    return manifest.with_df(out, step="licenses"), info


def ensure_licenses(
    manifest: Manifest,
    *,
    needed: bool = True,
    license_table: Path | str | None = None,
    model_column: str | None = None,
    license_column: str | None = None,
    real_table: Path | str | None = None,
    token: str | None = None,
    reporter: Reporter | None = None,
) -> Manifest:
    """The manifest with a ``license`` column: kept as is when present and no table is given, else annotated.

    ``needed=False`` (no licence filter in use) leaves the manifest alone unless a table is given.
    """
    given = license_table is not None or real_table is not None
    if not given and (not needed or LICENSE_COLUMN in manifest.df.columns):
        return manifest
    table = (
        load_license_table(license_table, model_column, license_column) if license_table is not None else None
    )
    real = real_license_table(real_table)
    return annotate_licenses(manifest, table, real, token=token, reporter=reporter)


# --- filter ------------------------------------------------------------------------------------------
def _matches(lid: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(lid, p.strip().lower()) for p in patterns)


def check_license_patterns(patterns: Sequence[str] | None, option: str) -> list[str]:
    """Split comma-separated values and reject empty ones (a UsageError names the option)."""
    out: list[str] = []
    for p in patterns or []:
        for part in p.split(","):
            if not part.strip():
                raise UsageError(f"{option} {p!r}: empty licence pattern", "write e.g. 'cc-by-*,apache-2.0'")
            out.append(part.strip())
    return out


def filter_licenses(
    df: pl.DataFrame,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    commercial_only: bool = False,
) -> pl.DataFrame:
    """Rows whose ``license`` matches an ``include`` glob (if any), no ``exclude`` glob, and (with
    ``commercial_only``) is known to allow commercial use. Globs are matched against normalised ids."""
    if LICENSE_COLUMN not in df.columns:
        raise InputError(
            "the manifest has no 'license' column",
            "annotate it with `cfx licenses SOURCE -o manifest.parquet`",
        )
    include = check_license_patterns(include, "--licenses")
    exclude = check_license_patterns(exclude, "--exclude-licenses")
    if not include and not exclude and not commercial_only:
        return df
    ids = [v for v in df.get_column(LICENSE_COLUMN).unique().to_list() if v is not None]
    keep = []
    for lid in ids:
        if include and not _matches(lid, include):
            continue
        if exclude and _matches(lid, exclude):
            continue
        if commercial_only and not is_commercial(lid):
            continue
        keep.append(lid)
    return df.filter(pl.col(LICENSE_COLUMN).is_in(keep))


def describe_filter(
    include: Sequence[str] | None, exclude: Sequence[str] | None, commercial_only: bool
) -> str:
    parts = []
    if include:
        parts.append("--licenses " + ",".join(include))
    if exclude:
        parts.append("--exclude-licenses " + ",".join(exclude))
    if commercial_only:
        parts.append("--commercial-only")
    return " ".join(parts)


# --- report ------------------------------------------------------------------------------------------
def license_report(manifest: Manifest, info: LicenseInfo | None = None) -> dict[str, Any]:
    """Rows and generators per licence with flags; generators and real sources no table knows."""
    df = manifest.df
    if LICENSE_COLUMN not in df.columns:
        raise InputError("the manifest has no 'license' column", "annotate it with `cfx licenses`")
    is_gen = pl.col("label") == GENERATED
    named_gen = is_gen & pl.col("model_name").is_not_null() & (pl.col("model_name") != "")
    per = (
        df.group_by(LICENSE_COLUMN)
        .agg(
            pl.len().alias("rows"),
            (pl.col("label") == REAL).sum().alias("real"),
            is_gen.sum().alias("generated"),
            pl.col("model_name").filter(named_gen).n_unique().alias("generators"),
            pl.col("real_source")
            .filter(pl.col("label") == REAL)
            .drop_nulls()
            .unique()
            .sort()
            .alias("sources"),
            pl.col(LICENSE_RAW_COLUMN).drop_nulls().unique().sort().head(5).alias("raw")
            if LICENSE_RAW_COLUMN in df.columns
            else pl.lit([]).alias("raw"),
        )
        .sort(["rows", LICENSE_COLUMN], descending=[True, False])
    )
    licenses = []
    flags: dict[str, dict[str, Any]] = {
        k: {"rows": 0, "licenses": []} for k in ("non_commercial", "share_alike", "unknown", "commercial")
    }
    for r in per.iter_rows(named=True):
        lid = r[LICENSE_COLUMN] or UNKNOWN
        fl = license_flags(lid)
        entry = {
            "license": lid,
            "rows": r["rows"],
            "real": r["real"],
            "generated": r["generated"],
            "generators": r["generators"],
            "real_sources": r["sources"],
            "raw": r["raw"],
            **fl,
        }
        licenses.append(entry)
        for key, on in (
            ("non_commercial", fl["non_commercial"]),
            ("share_alike", fl["share_alike"]),
            ("unknown", fl["commercial"] is None),
            ("commercial", fl["commercial"] is True),
        ):
            if on:
                flags[key]["rows"] += r["rows"]
                flags[key]["licenses"].append(lid)
    out: dict[str, Any] = {
        "root": manifest.root,
        "rows": df.height,
        "licenses": licenses,
        "flags": flags,
    }
    if info is not None:
        out["table"] = info.table.describe() if info.table is not None else None
        out["missing_generators"] = [
            {"model_name": k, "rows": v}
            for k, v in sorted(info.missing_generators.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ]
        out["unknown_real_sources"] = [
            {"real_source": k, "rows": v}
            for k, v in sorted(info.unknown_real_sources.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ]
        out["real_source_licenses"] = {
            name: lid
            for name, lid in sorted(
                {
                    info.real_table.names[k]: normalize_license(v) for k, v in info.real_table.entries.items()
                }.items()
            )
        }
    return out
