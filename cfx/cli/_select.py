"""The one selection flow of the selecting commands: load SOURCE, refuse outputs on inputs, licences, filters.

Commands declare the selection options of ``cfx.cli._options`` (``SELECTION_OPTIONS``) as parameters and
hand their parameters (``locals()``) here, so the options mean the same in every command and the steps run
in the same order: load, refuse outputs on inputs, licences (only when a licence filter needs them), row
filters, then each step's row counts as info lines.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfx.cli._options import build_selection
from cfx.cli._output import is_quiet, refuse_clobber

if TYPE_CHECKING:
    from cfx.manifest import Manifest
    from cfx.progress import Reporter
    from cfx.select import Selection

_SELECTION_PARAMS = tuple(inspect.signature(build_selection).parameters)


def selection_from(params: dict[str, Any]) -> Selection:
    """``build_selection`` from a command's parameters: the selection options it declares."""
    return build_selection(**{k: params[k] for k in _SELECTION_PARAMS if k in params})


def load_selected(
    source: str, params: dict[str, Any], outputs: dict[str, Path | None], reporter: Reporter
) -> tuple[Manifest, Selection]:
    """SOURCE loaded and selected as the command's selection options say (see module doc), and the
    selection (for its description in a card).

    ``params`` are the command's parameters (``token``, ``skip_bad``, ``workers`` and the selection and
    licence options it declares); ``outputs`` its output options, refused when they are inputs."""
    from cfx.licenses import ensure_licenses
    from cfx.load import load_manifest
    from cfx.select import apply_selection

    selection = selection_from(params)
    tables = [params.get("license_table"), params.get("real_license_table")]
    manifest = load_manifest(
        source,
        token=params.get("token"),
        skip_bad=bool(params.get("skip_bad")),
        workers=int(params.get("workers") or 1),
        reporter=reporter,
    )
    refuse_clobber(source, manifest, outputs, extra_inputs=tables)
    manifest = ensure_licenses(
        manifest,
        needed=selection.filters_licenses,
        license_table=params.get("license_table"),
        model_column=params.get("model_column"),
        license_column=params.get("license_column"),
        real_table=params.get("real_license_table"),
        token=params.get("token"),
        reporter=reporter,
    )
    picked = apply_selection(manifest, selection, reporter=reporter)
    if not is_quiet():
        for step in picked.steps:
            reporter.info(f"{step.name}: {step.before:,} → {step.after:,} rows")
    return picked.manifest, selection
