"""Packaging checks: every package folder ships in the wheel; the CLI entry point resolves."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """Each folder with an __init__.py under the mapped top-level folders is a listed package (else wheels miss it)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for name, folder in cfg["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found - listed == set(), f"package folders missing from pyproject packages: {sorted(found - listed)}"


def test_cli_help_lists_commands() -> None:
    """`speclake --help` explains the subcommands users need."""
    from click.testing import CliRunner

    from speclake.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("ingest", "sql", "tables", "vacuum", "index"):
        assert command in result.output, f"--help must list `{command}`"
