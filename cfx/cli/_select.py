"""The one selection flow of the selecting commands: load SOURCE, refuse outputs on inputs, licences, filters.

Commands take the selection options (``cfx.cli._options.SelectionOptions``) through
``with_selection_options`` and hand them here, so the options mean the same in every command and the steps
run in the same order: load, refuse outputs on inputs, licences (only when a licence filter needs them),
row filters, then each step's row counts as info lines.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Collection
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cfx.cli._options import SelectionOptions
from cfx.cli._output import is_quiet, refuse_clobber

if TYPE_CHECKING:
    from cfx.manifest import Manifest
    from cfx.progress import Reporter
    from cfx.quality import DropReport
    from cfx.select import Selection

R = TypeVar("R")


def with_selection_options(
    *, without: Collection[str] = ()
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Add the fields of SelectionOptions to a command as typer options, in place of its parameter annotated
    SelectionOptions (so --help lists them there), and call the command with their values in that parameter.

    ``without``: fields the command does not offer (they keep their defaults), e.g. balance's
    ``max_per_generator``, which its own --per-generator stands for."""
    options = _option_parameters(without)

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(command, eval_str=True)
        slot = _selection_slot(command, signature)
        params = list(signature.parameters.values())
        at = params.index(signature.parameters[slot])
        extended = signature.replace(parameters=[*params[:at], *options, *params[at + 1 :]])

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> R:
            given = extended.bind(*args, **kwargs)
            given.apply_defaults()
            values = dict(given.arguments)
            chosen = SelectionOptions(**{p.name: values.pop(p.name) for p in options})
            return command(**values, **{slot: chosen})

        run.__signature__ = extended  # type: ignore[attr-defined]  # what typer reads
        run.__annotations__ = {p.name: p.annotation for p in extended.parameters.values()}
        return run

    return decorate


def _option_parameters(without: Collection[str]) -> list[inspect.Parameter]:
    """SelectionOptions' fields (less ``without``) as keyword parameters with their typer annotations."""
    names = [f.name for f in fields(SelectionOptions)]
    unknown = set(without) - set(names)
    if unknown:
        raise TypeError(f"not fields of SelectionOptions: {sorted(unknown)}")
    hints = typing.get_type_hints(SelectionOptions, include_extras=True)
    return [
        inspect.Parameter(
            f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=hints[f.name]
        )
        for f in fields(SelectionOptions)
        if f.name not in without
    ]


def _selection_slot(command: Callable[..., Any], signature: inspect.Signature) -> str:
    """The name of the command's one parameter annotated SelectionOptions."""
    slots = [p.name for p in signature.parameters.values() if p.annotation is SelectionOptions]
    if len(slots) != 1:
        raise TypeError(f"{command.__name__} needs one parameter annotated SelectionOptions, has {slots}")
    return slots[0]


def load_licensed(
    source: str,
    select: SelectionOptions,
    selection: Selection,
    *,
    outputs: dict[str, Path | None],
    token: str | None,
    skip_bad: bool,
    workers: int,
    reporter: Reporter,
) -> Manifest:
    """SOURCE loaded, its outputs refused when they are inputs, and licences added when ``selection``
    filters by them (from the licence tables of ``select``)."""
    from cfx.load import load_manifest

    manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
    refuse_clobber(source, manifest, outputs, extra_inputs=select.tables)
    return add_licenses(manifest, select, needed=selection.filters_licenses, token=token, reporter=reporter)


def add_licenses(
    manifest: Manifest, select: SelectionOptions, *, needed: bool, token: str | None, reporter: Reporter
) -> Manifest:
    """``manifest`` with a license column (as `cfx licenses` adds it, from the licence tables of ``select``)
    when ``needed`` and it has none yet."""
    from cfx.licenses import ensure_licenses

    return ensure_licenses(
        manifest,
        needed=needed,
        license_table=select.license_table,
        model_column=select.model_column,
        license_column=select.license_column,
        real_table=select.real_license_table,
        token=token,
        reporter=reporter,
    )


def quality_kinds(values: list[str] | None) -> list[str] | None:
    """The kinds of --drop-quality-issues (checked before anything is loaded: an unknown one is exit 2)."""
    from cfx.quality import parse_kinds

    return None if values is None else parse_kinds(values)


def drop_quality(
    manifest: Manifest, kinds: list[str] | None, reporter: Reporter
) -> tuple[Manifest, DropReport | None]:
    """``manifest`` without the rows that have any of ``kinds`` (--drop-quality-issues), counted per label."""
    if not kinds:
        return manifest, None
    from cfx.inspect import cached_pixels
    from cfx.quality import drop_quality_issues

    kept, report = drop_quality_issues(cached_pixels(manifest) or manifest, kinds)
    reporter.info(report.summary())
    return kept, report


def load_selected(
    source: str,
    select: SelectionOptions,
    seed: int,
    outputs: dict[str, Path | None],
    reporter: Reporter,
    *,
    token: str | None,
    skip_bad: bool,
    workers: int,
) -> tuple[Manifest, Selection]:
    """SOURCE loaded and selected as ``select`` says (see module doc), and the selection (for its
    description in a card). ``outputs`` are the command's output options, refused when they are inputs."""
    from cfx.select import apply_selection

    selection = select.selection(seed)
    manifest = load_licensed(
        source,
        select,
        selection,
        outputs=outputs,
        token=token,
        skip_bad=skip_bad,
        workers=workers,
        reporter=reporter,
    )
    picked = apply_selection(manifest, selection, reporter=reporter)
    if not is_quiet():
        for step in picked.steps:
            reporter.info(f"{step.name}: {step.before:,} → {step.after:,} rows")
    return picked.manifest, selection
