"""The selection options, declared once (SelectionOptions) and added by @with_selection_options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from cfx.cli._options import NO_SELECTION, SELECTING_COMMANDS, SelectionOptions
from cfx.cli._select import with_selection_options
from tests.conftest import Run

CfxRun = Callable[..., Run]

FIELDS = [f.name for f in fields(SelectionOptions)]
# balance's --per-generator stands for --max-per-generator
NOT_OFFERED = {"balance": {"max_per_generator"}}

# A value other than the default for every option, and what the command should receive for it.
GIVEN = [
    *("--generators", "a", "--generators", "b,c", "--architectures", "GAN", "--labels", "real"),
    *("--real-sources", "COCO", "--exclude-nsfw", "--max-per-generator", "3", "--where", "width > 1"),
    *("--licenses", "mit", "--exclude-licenses", "*-nc-*", "--commercial-only"),
    *("--license-table", "t.csv", "--model-column", "m", "--license-column", "l"),
    *("--real-license-table", "r.csv", "--allow-missing"),
]
RECEIVED = SelectionOptions(
    generators=["a", "b,c"],
    architectures=["GAN"],
    labels=["real"],
    real_sources=["COCO"],
    exclude_nsfw=True,
    max_per_generator=3,
    where="width > 1",
    licenses=["mit"],
    exclude_licenses=["*-nc-*"],
    commercial_only=True,
    license_table=Path("t.csv"),
    model_column="m",
    license_column="l",
    real_license_table=Path("r.csv"),
    allow_missing=True,
)


def _run_decorated(args: list[str], without: set[str] | None = None) -> tuple[str, SelectionOptions, int]:
    seen: list[tuple[str, SelectionOptions, int]] = []

    @with_selection_options(without=without or set())
    def command(source: str, select: SelectionOptions = NO_SELECTION, seed: int = 0) -> None:
        seen.append((source, select, seed))

    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [call] = seen
    return call


def test_every_option_value_reaches_the_command() -> None:
    assert all(getattr(RECEIVED, name) != getattr(NO_SELECTION, name) for name in FIELDS), "GIVEN misses one"
    assert _run_decorated(["src", *GIVEN, "--seed", "7"]) == ("src", RECEIVED, 7)
    assert _run_decorated(["src"]) == ("src", NO_SELECTION, 0)


def test_without_leaves_an_option_out_and_at_its_default() -> None:
    with pytest.raises(AssertionError, match="No such option: --max-per-generator"):
        _run_decorated(["src", "--max-per-generator", "3"], without={"max_per_generator"})
    _, select, _ = _run_decorated(["src", "--labels", "real"], without={"max_per_generator"})
    assert select == SelectionOptions(labels=["real"])


def test_a_command_needs_one_selection_parameter() -> None:
    def command(source: str) -> None: ...

    with pytest.raises(TypeError, match="one parameter annotated SelectionOptions"):
        with_selection_options()(command)
    with pytest.raises(TypeError, match="not fields of SelectionOptions"):
        with_selection_options(without={"generator"})


@pytest.mark.parametrize("command", SELECTING_COMMANDS)
def test_every_selecting_command_offers_the_options_together_in_one_order(command: str) -> None:
    from cfx.cli import app

    click_command = get_command(app).commands[command]  # type: ignore[attr-defined]
    names = [p.name for p in click_command.params]
    expected = [name for name in FIELDS if name not in NOT_OFFERED.get(command, set())]
    start = names.index(expected[0])
    assert names[start : start + len(expected)] == expected


def _names(path: Path) -> list[str]:
    return sorted(pl.read_parquet(path, columns=["image_name"])["image_name"])


def _rows(path: Path) -> list[tuple[int, str]]:
    """(label, generator) of generated rows, (label, real source) of real ones."""
    df = pl.read_parquet(path, columns=["label", "model_name", "real_source"])
    return [(label, model if label else source) for label, model, source in df.iter_rows()]


@pytest.mark.parametrize("command", ["slice", "subset", "inspect"])
def test_a_real_command_selects_the_rows_its_options_ask_for(
    command: str, cfx: CfxRun, cf_small: Path, tmp_path: Path
) -> None:
    out = ["--out", str(tmp_path / "out")] if command == "subset" else ["-o", str(tmp_path / "m.parquet")]
    run = cfx(command, str(cf_small), "--generators", "stabilityai/*", "--labels", "generated", *out)
    assert run.returncode == 0, run.stderr
    written = tmp_path / ("out/manifest.parquet" if command == "subset" else "m.parquet")
    source = pl.read_parquet(cf_small / "data" / "*.parquet", columns=["image_name", "label", "model_name"])
    wanted = source.filter((pl.col("label") == 1) & pl.col("model_name").str.starts_with("stabilityai/"))
    assert 0 < wanted.height < source.filter(pl.col("label") == 1).height
    assert _names(written) == sorted(wanted["image_name"])


def test_balance_selects_before_it_balances(cfx: CfxRun, cf_small: Path, tmp_path: Path) -> None:
    run = cfx(
        "balance", str(cf_small), "--generators", "stabilityai/*", "--real-sources", "FFHQ,AFHQ-v2",
        "-o", str(tmp_path / "b.parquet"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = _rows(tmp_path / "b.parquet")
    assert {label for label, _ in rows} == {0, 1}
    assert all(name.startswith("stabilityai/") for label, name in rows if label == 1)
    assert {name for label, name in rows if label == 0} <= {"FFHQ", "AFHQ-v2"}
