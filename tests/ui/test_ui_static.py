"""The dashboard's files: every module and stylesheet the page loads is in the package, and the
page reaches only its own origin (no CDN, no tiles)."""

from __future__ import annotations

import re

from dockline.ui import CONTENT_SECURITY_POLICY, static_dir

_REF = re.compile(r"""(?:from\s+|import\s+|src=|href=)["']([^"'#]+)["']""")


def test_every_referenced_file_is_in_the_package() -> None:
    root = static_dir()
    pending, seen = [root / "index.html"], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        assert path.is_file(), f"{path.relative_to(root)} is referenced but missing"
        for ref in _REF.findall(path.read_text(encoding="utf-8")):
            if ref.startswith("data:") or ref.startswith("/v1/"):
                continue
            assert "://" not in ref and not ref.startswith("//"), f"{path.name} loads {ref}"
            pending.append((path.parent / ref).resolve())
    names = {p.name for p in seen}
    assert {"main.js", "lib.js", "style.css", "map.js", "lineage.js"} <= names


def test_no_file_names_another_host() -> None:
    for path in static_dir().rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            hosts = re.findall(r"https?://[^\s\"')]+", text)
            assert hosts == ["http://www.w3.org/2000/svg"] or not hosts, (path.name, hosts)
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
