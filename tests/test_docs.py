"""Docs that cannot go stale: the CLI reference is regenerated and compared; every command has help + examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cfx.cli._docs import command_names, help_text, render

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == render(), "docs/cli.md is stale: run `python -m cfx.cli._docs > docs/cli.md`"


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_and_examples(name: str) -> None:
    text = help_text([name])
    summary = text.split("\n\n")[1].strip() if "\n\n" in text else ""
    assert len(summary) > 20, f"cfx {name} needs a one-line summary"
    assert "Examples:" in text, f"cfx {name} --help needs an Examples: section"
    examples = text.split("Examples:", 1)[1]
    assert re.search(rf"^\s+cfx {name}\b", examples, re.M), f"cfx {name} examples should show `cfx {name} …`"
    for line in text.splitlines():
        if line.strip().startswith("--"):
            opt = line.split()[0]
            # every option line has a description after the flag(s)
            assert len(line.strip()) > len(opt) + 2, f"cfx {name}: option {opt} has no help"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (ROOT / script).is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
