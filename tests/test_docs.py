"""The documentation site: generated references match the code, every config key is described, README is
the short front door whose links resolve, and `mkdocs build --strict` passes."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_references_are_what_the_code_generates():
    for path, text in _generator().pages().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run `make docs` (python docs/gen_reference.py)"


def test_every_config_key_has_a_type_a_default_and_a_description():
    rows = [line for line in (DOCS / "reference" / "config.md").read_text().splitlines() if line.startswith("| `")]
    assert len(rows) > 150  # every section's keys, not a stub
    undescribed = [row.split("|")[1].strip() for row in rows if not row.rstrip(" |").split("|")[-1].strip()]
    assert not undescribed, f"config keys without a description (add Field(description=...)): {undescribed}"


def test_the_cli_reference_lists_every_command_and_a_plugin_command():
    text = (DOCS / "reference" / "cli.md").read_text()
    for command in ("rayunify train", "rayunify eval", "rayunify report", "rayunify shapes-base"):
        assert f"## `{command}`" in text
    assert "`--dry-run`" in text and "`--intervals`" in text


def test_readme_is_the_short_front_door_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "make demo" in text and "make test" in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is a dev extra: pip install -e '.[dev]'")
def test_the_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()
