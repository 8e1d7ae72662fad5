"""Every file the repository cites resolves inside it (or is a public URL): an engineer with only this repository
can follow each reference. Design facts belong in docs/design/, written in our own words."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s)>\]\"'`]+", re.I)
# Places outside any clone: the machine's work area, a sibling "shared" checkout, private notes.
OUTSIDE = re.compile(r"/work/|\.\./shared\b|\bshared/(?:reference|traces)\b|(?<![\w.-])reference/[\w.-]+\.md\b")
# Files our own tools write (named in their help), not citations.
GENERATED = frozenset({"validate_gpu.md"})
# A markdown file named in text, with an optional #anchor.
MARKDOWN = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)*[\w.-]+(?:/[\w.-]+)*\.md)(?![\w/])(#[\w-]+)?")


@cache
def tracked() -> tuple[str, ...]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return tuple(path for path in out.decode().split("\0") if path and (ROOT / path).is_file())


def texts() -> list[tuple[str, str]]:
    found = []
    for path in tracked():
        if path == THIS:
            continue
        try:
            found.append((path, (ROOT / path).read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary (fuzz corpora, images)
    return found


def resolve(citing: str, cited: str) -> str | None:
    """The tracked file a citation names: relative to the citing file, to the root, or by a unique path suffix."""
    for base in (Path(citing).parent, Path()):
        candidate = (ROOT / base / cited).resolve()
        if candidate.is_relative_to(ROOT) and candidate.relative_to(ROOT).as_posix() in tracked():
            return candidate.relative_to(ROOT).as_posix()
    tail = cited.lstrip("./")
    matches = [path for path in tracked() if path == tail or path.endswith("/" + tail)]
    return matches[0] if len(matches) == 1 else None


@cache
def anchors(markdown_path: str) -> frozenset[str]:
    """GitHub's heading anchors of a markdown file."""
    slugs = set()
    for line in (ROOT / markdown_path).read_text(encoding="utf-8").splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            slugs.add(slug)
    return frozenset(slugs)


def citation_problems() -> list[str]:
    problems = []
    for path, text in texts():
        text = URL.sub(" ", text)
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{path}:{number}"
            outside = [m.span() for m in OUTSIDE.finditer(line)]
            problems += [f"{where}: cites {line[a:b]!r}, which is outside the repository" for a, b in outside]
            for match in MARKDOWN.finditer(line):
                cited, anchor = match.group(1), match.group(2)
                if Path(cited).name in GENERATED or any(a < match.end() and match.start() < b for a, b in outside):
                    continue
                target = resolve(path, cited)
                if target is None:
                    problems.append(f"{where}: cites {cited!r}, which is no file of the repository")
                elif anchor and anchor[1:] not in anchors(target):
                    problems.append(f"{where}: {cited}{anchor}: {target} has no heading with that anchor")
    return problems


def test_every_citation_resolves_inside_the_repository() -> None:
    problems = citation_problems()
    assert not problems, "put the facts into docs/design/ (own words) or cite a public URL:\n" + "\n".join(problems)


def test_the_check_sees_outside_citations_and_broken_anchors(tmp_path: Path) -> None:
    assert OUTSIDE.search("see ../shared/DESIGN.md") and OUTSIDE.search("reference/dra_api.md 1.4")
    assert OUTSIDE.search("from /work/shared/traces") and not OUTSIDE.search("docs/design/kubelet.md")
    assert resolve("dra_hami/wire.py", "DESIGN.md") is None
    assert resolve("dra_hami/wire.py", "docs/design/wire-contract.md") == "docs/design/wire-contract.md"
    assert resolve("docs/design/README.md", "../security.md") == "docs/security.md"
    assert "slices" in anchors("docs/design/observed-1.36.md")
    assert "no-such-section" not in anchors("docs/design/observed-1.36.md")
    text = URL.sub(" ", "https://x.io/SPEC.md, hami_core.md §12, a.mdx, kubelet.md#registration.")
    assert [m.groups() for m in MARKDOWN.finditer(text)] == [("hami_core.md", None), ("kubelet.md", "#registration")]
