"""The README is a way in and the docs hold together: short README, no dead link, public API only.

Links are checked as GitHub resolves them: a relative path must name a file of the repository,
and a ``#fragment`` must be the slug GitHub gives one of the target's headings (lower case,
punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats). Python snippets are parsed
and may use only what ``iamdb`` exports and its public submodules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import iamdb
from tests.paths import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 160

PUBLIC_MODULES = {"iamdb", "iamdb.aio", "iamdb.errors", "iamdb.sqlalchemy"}
# iamdb.info() and iamdb.Info land in parallel (issue 14 §1); a no-op once __all__ has them.
PUBLIC_NAMES = {*iamdb.__all__, "aio", "errors", "sqlalchemy"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def split(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The prose lines (fenced code blanked) and the fenced blocks as (language, code)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    fence = ""
    language = ""
    code: list[str] = []
    for line in text.splitlines():
        match = FENCE.match(line)
        if not fence and match:
            fence, language, code = match.group(1), match.group(2).lower(), []
            prose.append("")
        elif fence and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]):
            blocks.append((language, "\n".join(code)))
            fence = ""
            prose.append("")
        elif fence:
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert not fence, "unclosed code fence"
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower case, punctuation dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    prose, _ = split(page.read_text(encoding="utf-8"))
    return [m.group(1) for line in prose for m in LINK.finditer(CODE_SPAN.sub("", line))]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in links(page):
        if SCHEME.match(target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or root not in (resolved, *resolved.parents):
            broken.append(f"{target}: no such file")
        elif fragment and (resolved.suffix != ".md" or fragment not in anchors(resolved)):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(root)}")
    return broken


def private_uses(code: str) -> list[str]:
    """What a Python snippet takes from iamdb beyond its public API."""
    tree = ast.parse(code)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [
                a.name
                for a in node.names
                if a.name.startswith("iamdb") and a.name not in PUBLIC_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iamdb"):
            if node.module not in PUBLIC_MODULES:
                bad.append(f"from {node.module}")
            elif node.module == "iamdb":
                bad += [
                    f"from iamdb import {a.name}" for a in node.names if a.name not in PUBLIC_NAMES
                ]
            else:
                bad += [
                    f"from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "iamdb" and node.attr not in PUBLIC_NAMES:
                bad.append(f"iamdb.{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if (
                isinstance(inner.value, ast.Name)
                and inner.value.id == "iamdb"
                and node.attr[:1] == "_"
            ):
                bad.append(f"iamdb.{inner.attr}.{node.attr}")
    return bad


def test_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_snippets_use_the_public_api(page: Path) -> None:
    _, blocks = split(page.read_text(encoding="utf-8"))
    snippets = [code for language, code in blocks if language in ("python", "py")]
    bad = [use for code in snippets for use in private_uses(code)]
    assert bad == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The checkers themselves: a dead file, a dead anchor, a private import are all seen."""
    (tmp_path / "other.md").write_text("# Set up: `get_pg()` and *friends*\n\n## Again\n## Again\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[a](other.md#set-up-get_pg-and-friends) [b](other.md#again-1) [c](#title)\n"
        "[d](missing.md) [e](other.md#nowhere) `[f](missing.md)` [g](https://example.com/x)\n"
        "```sh\n# not a heading\n[h](missing.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
    ]
    assert "not-a-heading" not in anchors(page)
    assert private_uses("import iamdb\niamdb.get_pg(); iamdb.info('pg')") == []
    assert private_uses("from iamdb.aio import get_pg\nimport iamdb.sqlalchemy") == []
    private = (
        "import iamdb._registry\nfrom iamdb._sql.config import x\nfrom iamdb import registry\n"
        "iamdb._registry.default.managed('pg').reused\niamdb.aio._loop\n"
    )
    assert sorted(private_uses(private)) == [
        "from iamdb import registry",
        "from iamdb._sql.config",
        "iamdb._registry",
        "iamdb._registry",
        "iamdb.aio._loop",
    ]
