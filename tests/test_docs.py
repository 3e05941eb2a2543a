"""The README is a front door and the docs hang together: every relative link of README.md and docs/*.md reaches
a file, and every #anchor a heading of it (as GitHub derives anchors from headings); the README stays short and
lists every module of the library in its tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import PROJECT

DOCS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> set[str]:
    found, fence = set(), False
    for line in path.read_text().splitlines():
        fence ^= line.startswith("```")
        match = None if fence else re.match(r"#+ (.*)", line)
        if match:
            found.add(anchor(match.group(1)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_relative_link_and_anchor_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, fragment = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in headings(file):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_the_readme_is_a_front_door_whose_tree_names_every_module():
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    tree = readme.split("## The house", 1)[1].split("```", 2)[1]
    library = PROJECT / "src" / "product_classifier"
    modules = {p.name for p in library.rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if not re.search(rf"(?<![\w/]){re.escape(m)}\b", tree))
    assert not missing, f"README's tree misses {missing}"
