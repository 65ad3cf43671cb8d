"""The documentation: the MkDocs site builds under ``--strict``, and README.md points only into the
repository or to public sites.

The site's ``mkdocs.yml`` turns every broken link, missing anchor and page left out of the nav
into a warning, and ``--strict`` turns warnings into a failed build; the second test proves that
chain still bites, by building a page with a broken link. The README check reads the Markdown
links (inline, reference, autolinks, HTML ``href``/``src``) and the paths named in inline code:
an ``http(s)`` URL is fine, a relative link must name an existing file of the repository, and
nothing may lead out of it (``../``, absolute paths, other schemes).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
MKDOCS_YML = ROOT / "mkdocs.yml"

# -- the site -----------------------------------------------------------------------------------


def _require_mkdocs() -> None:
    """Skip without MkDocs (a developer's environment), but fail under CI, where the docs must
    be checked."""
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    if not missing:
        return
    why = f"{' and '.join(missing)} not installed (pip install mkdocs-material)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must build the docs: {why}")
    pytest.skip(why)


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
         "-f", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    _require_mkdocs()
    site = tmp_path / "site"
    result = _build(MKDOCS_YML, site)
    assert result.returncode == 0, (
        f"mkdocs build --strict failed (exit {result.returncode}):\n{result.stderr}"
        f"{result.stdout}")
    for page in ("index.html", "architecture/index.html", "strategies/baseline-v1/index.html",
                 "strategies/writing/index.html", "operations/index.html",
                 "operations/deployment/index.html", "configuration/index.html"):
        assert (site / page).is_file(), f"the built site has no {page}"
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "nifty-engine" in home and "Four modes" in home


@pytest.mark.parametrize("body, culprit", [
    ("# Home\n\nSee [the missing page](missing.md).\n", "missing.md"),
    ("# Home\n\nSee [a missing anchor](#no-such-heading).\n", "no-such-heading"),
])
def test_a_broken_link_fails_the_strict_build(tmp_path: Path, body: str, culprit: str) -> None:
    """The project's validation settings, inherited, make a broken link a failed build."""
    _require_mkdocs()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(body, encoding="utf-8")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: '{MKDOCS_YML}'\ndocs_dir: '{docs}'\nnav:\n  - Home: index.md\n",
                      encoding="utf-8")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0, "a broken link passed mkdocs build --strict"
    assert culprit in result.stderr + result.stdout


# -- README.md ----------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+[^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>]*)>")
_HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_UP = re.compile(r"(?:^|[\s'\"(=])\.\./")


def outside_references(markdown: str, base: Path, root: Path) -> list[str]:
    """Every reference in ``markdown`` (a file in ``base``) that leads out of ``root``, or to
    nothing in it, as one line each. Public ``http(s)`` URLs and same-page anchors are fine."""
    text = _FENCE.sub("", markdown)
    problems: list[str] = []
    targets = [m.group(1) for m in _INLINE_LINK.finditer(text)]
    targets += [m.group(1) for m in _REFERENCE.finditer(text)]
    targets += [m.group(1) for m in _AUTOLINK.finditer(text)]
    targets += [m.group(1) for m in _HTML_ATTR.finditer(text)]
    for raw in targets:
        problem = _link_problem(raw.strip().strip("<>").strip(), base, root)
        if problem:
            problems.append(f"link {raw!r}: {problem}")
    for m in _CODE_SPAN.finditer(text):
        code = m.group(2).strip()
        if _UP.search(code):
            problems.append(f"`{code}`: names a path outside the repository")
    return problems


def _link_problem(target: str, base: Path, root: Path) -> str | None:
    if not target:
        return "empty link"
    lowered = target.lower()
    if lowered.startswith(("http://", "https://")):
        return None
    if target.startswith("#"):
        return None
    if target.startswith("//"):
        return "a protocol-relative URL (use https://)"
    if _SCHEME.match(target):
        return f"a {target.split(':', 1)[0]}: link leaves the repository"
    if target.startswith("/"):
        return "an absolute path: use a path relative to the file"
    path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
    if not path:
        return None
    if ".." in Path(path).parts:
        return "goes up with ../, out of the repository"
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return "resolves outside the repository"
    if not resolved.exists():
        return "no such file in the repository"
    return None


def test_readme_points_only_into_the_repository_or_to_public_sites() -> None:
    readme = ROOT / "README.md"
    problems = outside_references(readme.read_text(encoding="utf-8"), ROOT, ROOT)
    assert not problems, "README.md points outside the repository:\n  " + "\n  ".join(problems)


def test_the_reference_check_flags_what_leaves_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("# Guide\n", encoding="utf-8")
    (root / "config.toml").write_text("", encoding="utf-8")
    markdown = "\n".join([
        "[fine](https://github.com/marketcalls/openalgo) and [also](http://example.com/x)",
        "[in repo](docs/guide.md#intro) [anchor](#what-it-is) [file](<config.toml>)",
        "[up](../shared/DESIGN.md) [gone](docs/missing.md) [abs](/etc/passwd)",
        "[mail](mailto:someone@example.com) ![img](../pic.png) <ftp://host/file>",
        "[ref]: ../shared/specs/",
        "Design: `../shared/DESIGN.md`; run `python run.py replay` in `docs/`.",
        '<a href="file:///tmp/x">html</a>',
        "```bash",
        "cd ../elsewhere && cat ../notes.md   # inside a code block: not a reference",
        "```",
    ])
    problems = outside_references(markdown, root, root)
    flagged = "\n".join(problems)
    for culprit in ("../shared/DESIGN.md'", "docs/missing.md", "/etc/passwd", "mailto:",
                    "../pic.png", "ftp://host/file", "../shared/specs/",
                    "`../shared/DESIGN.md`", "file:///tmp/x"):
        assert culprit in flagged, f"{culprit} not flagged in:\n{flagged}"
    for fine in ("github.com", "example.com/x", "docs/guide.md", "#what-it-is", "config.toml",
                 "run.py replay", "docs/`", "elsewhere", "notes.md"):
        assert fine not in flagged, f"{fine} wrongly flagged in:\n{flagged}"
    assert len(problems) == 9, flagged
