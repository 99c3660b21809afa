"""The user docs: the generated reference is current, every relative link resolves, and the
README stays short (at most 150 lines) and agrees with crikpy on the settings it shows."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from tests.docs import generate_reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), ![image](target) too
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def test_the_generated_reference_is_current():
    committed = generate_reference.SETTINGS_PAGE.read_text()
    assert committed == generate_reference.settings_page(), (
        "docs/settings.md differs from crikpy/settings_table.py and crikpy/errors.py; "
        f"regenerate it with `{generate_reference.COMMAND}` and commit the result")


def test_the_readme_fits_on_a_few_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_readmes_short_settings_table_agrees_with_the_declarations():
    from crikpy.settings_table import SETTINGS

    declared = {s.config_key: s for s in SETTINGS if s.config_key}
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Settings most users touch"):]
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| .+ \|$", section.split("\n## ")[0], re.MULTILINE)
    assert len(rows) == 8
    for key, default in rows:
        assert key in declared, f"README.md names a setting `{key}` that crikpy does not have"
        assert declared[key].shown().startswith(default), (
            f"README.md says `{key}` defaults to {default}; docs/settings.md: {declared[key].shown()}")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to -."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", page.read_text()),
                              re.MULTILINE):
        text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
        slug = slug.replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading in {resolved.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)} links to:\n" + "\n".join(broken)


def test_the_link_checker_sees_links_and_anchors(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# How it works: `run`, **now**\n\n## Limits\n\n## Limits\n\n"
                    "[x](b.md#top) [y](#limits-1) ![z](img.png) `[not](a link)`\n"
                    "```\n[nor](this)\n```\n")
    assert relative_links(page) == ["b.md#top", "#limits-1", "img.png"]
    assert anchors(page) == {"how-it-works-run-now", "limits", "limits-1"}
