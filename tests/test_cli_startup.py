"""A command imports only what it runs: `cfx --help` and every `cfx COMMAND --help` stay light.

A pipeline runs many short commands; importing polars, pyarrow, scipy or huggingface_hub for each costs
about a second. Command modules import their library inside the command function (see cfx/defaults.py for
the defaults their signatures show).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = (
    "datasets",
    "httpx",
    "huggingface_hub",
    "imagehash",
    "matplotlib",
    "numpy",
    "PIL",
    "polars",
    "pyarrow",
    "ray",
    "scipy",
)

# Imports cfx.cli and builds every command's help (typer evaluates each signature), then lists what came in.
PROBE = """
import json, sys
from typer.testing import CliRunner
from cfx.cli import app
from cfx.cli._docs import command_names

heavy = {heavy!r}
after_import = sorted(m for m in heavy if m in sys.modules)
failed = []
for name in [None, *command_names()]:
    args = ["--help"] if name is None else [name, "--help"]
    if CliRunner().invoke(app, args, prog_name="cfx").exit_code != 0:
        failed.append(name)
after_help = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({{"after_import": after_import, "after_help": after_help, "failed": failed}}))
"""


def test_cli_help_imports_no_heavy_library() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["failed"] == [], f"--help failed for: {got['failed']}"
    assert got["after_import"] == [], f"`import cfx.cli` pulls in {got['after_import']}"
    assert got["after_help"] == [], f"`cfx COMMAND --help` pulls in {got['after_help']}"
