"""Safe, collision-free, reversible file and folder names for whatever a metadata column holds.

Generator names carry ``/`` (``stabilityai/stable-diffusion-2``) and may carry ``..``, newlines, unicode,
hundreds of characters, or differ from another name only in case (a clash on macOS and Windows file systems).
The rule, applied to every distinct value of a column at once:

1. ``/`` becomes ``__``; every run of characters outside ``[A-Za-z0-9._-]`` becomes ``_``; leading dots
   and dashes are dropped (no ``..``, no hidden files, no option-like names); at most 64 characters.
2. When that changed the name (it is *lossy*), or the name is one of the export's own files, or a Windows
   device name (``con``, ``nul``, ``aux.txt``, ``com1``, ``lpt9.png``…: Windows opens the device whatever the
   extension), or ends in a dot (Windows drops it), or another value of the column gives the same name
   ignoring case, ``-`` and the first 8 hex digits of the sha256 of the original (UTF-8) are appended
   (a device name is also led by ``_``: ``_nul-…``).

So names that were already safe stay as they are, and every other name is unique. The mapping is written
to ``names.csv`` (``kind,original,safe``): it is the way back.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable

from cfx.errors import OutputError

MAX_CHARS = 64
HASH_CHARS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_NO_DOTS = re.compile(r"[^A-Za-z0-9_-]+")
RESERVED = frozenset({"names.csv", "index.csv", "metadata.jsonl", "readme.md", "features.json"})
WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{d}{i}" for d in ("com", "lpt") for i in "0123456789"}
)


def is_windows_device(name: str) -> bool:
    """``nul``, ``AUX.txt``, ``com1.tar.gz``: the part before the first dot (trailing spaces ignored) names a
    device on Windows, which opens the device instead of the file."""
    return name.split(".", 1)[0].rstrip(" ").lower() in WINDOWS_DEVICES


def _hash(original: str) -> str:
    return hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def slug(original: str, dots: bool = True) -> str:
    """Step 1 of the rule: the readable part (may be empty). ``dots=False`` also maps ``.`` (tar keys)."""
    text = original.replace("/", "__")
    text = (_UNSAFE if dots else _UNSAFE_NO_DOTS).sub("_", text)
    return text.lstrip(".-")[:MAX_CHARS]


def safe_names(values: Iterable[str], dots: bool = True) -> dict[str, str]:
    """original -> safe name for every distinct value (the rule in the module docstring)."""
    originals = sorted(set(values))
    base = {v: slug(v, dots) for v in originals}
    by_fold: dict[str, list[str]] = defaultdict(list)
    for v, s in base.items():
        by_fold[s.lower()].append(v)
    out = {}
    for v, s in base.items():
        clash = len(by_fold[s.lower()]) > 1
        device = is_windows_device(s)
        if s != v or clash or not s or s.lower() in RESERVED or device or s.endswith("."):
            # a device name keeps naming the device whatever follows its first dot: lead it with `_`
            s = f"{'_' if device else ''}{s}-{_hash(v)}" if s else f"_{_hash(v)}"
        out[v] = s
    folded = [s.lower() for s in out.values()]
    if len(set(folded)) != len(folded):  # only a sha256-prefix collision could get here
        raise OutputError(
            "two names map to the same safe file name",
            "this is a bug in cfx; please report it with CFX_DEBUG=1",
        )
    return out


def is_safe_component(name: str) -> bool:
    """A single path component that cannot leave its folder."""
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
    )
