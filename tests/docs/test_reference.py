"""The generated reference pages equal what scripts/gen_docs.py makes from the code now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from doc_blocks import ROOT


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN_DOCS = gen_docs()


@pytest.mark.parametrize("page", sorted(GEN_DOCS.PAGES), ids=lambda p: p.name)
def test_generated_page_is_current(page: Path) -> None:
    committed = page.read_text(encoding="utf-8") if page.exists() else ""
    assert committed == GEN_DOCS.PAGES[page](), (
        f"{page.relative_to(ROOT)} is stale: run `python scripts/gen_docs.py` and commit it"
    )


def test_the_cli_reference_has_every_command_and_option() -> None:
    import typer

    from connector_sync.cli.app import app

    reference = GEN_DOCS.cli_reference()
    root = typer.main.get_command(app)
    commands = list(GEN_DOCS._commands(root, root.context_class(root, info_name="connector-sync")))
    assert len(commands) > 10
    for command, ctx in commands:
        assert f"Usage: {ctx.command_path}" in reference
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in reference, f"{ctx.command_path} {opt}"


def test_the_connector_types_are_the_built_in_ones_only() -> None:
    reference = GEN_DOCS.connector_types_reference()
    headings = [line for line in reference.splitlines() if line.startswith("## ")]
    assert headings == [f"## `{name}`" for name in ("csv", "demo", "file", "http", "sql")]
    # The test suite's own plugins are installed in this process, and never listed.
    assert "flaky" not in reference and "sleepy" not in reference
