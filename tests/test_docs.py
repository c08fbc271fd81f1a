"""The README is a front door and docs/ the manual: links resolve, the config reference is generated."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from conftest import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lowercase, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def without_code(markdown: str) -> str:
    """The text outside fenced code blocks (a `#` comment in a shell block is not a heading)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def broken_links(page: Path) -> list[str]:
    text = without_code(page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(without_code(file.read_text(encoding="utf-8"))):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_readme_is_a_front_door_of_at_most_200_lines():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for section in ("## Install", "## Quickstart", "## Commands", "## Where the code is"):
        assert section in readme


def test_every_readme_link_resolves():
    assert broken_links(REPO / "README.md") == []
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall((REPO / "README.md").read_text(encoding="utf-8"))}
    assert {page.name for page in DOCS} <= linked, "a page of docs/ that the README does not link to"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_docs_link_resolves(page):
    assert broken_links(page) == []


def test_the_anchor_check_itself_finds_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Some heading (x)\n\n[ok](#some-heading-x) [bad](#nope) [gone](b.md)\n")
    assert broken_links(tmp_path / "a.md") == ["#nope (no such heading)", "b.md (no such file)"]


def test_config_reference_is_generated_from_the_dataclasses():
    spec = importlib.util.spec_from_file_location("config_doc", REPO / "scripts" / "config_doc.py")
    config_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_doc)
    text = config_doc.DOC.read_text(encoding="utf-8")
    assert config_doc.rendered(text) == text, "docs/config.md is out of date: run .venv/bin/python scripts/config_doc.py"
    for key in ("`train.learning_rate`", "`system.checkpoint_interval`", "`model.hidden_size`", "`data.masking`"):
        assert key in text
