"""The package's shape rules (tools/check_layout.py) hold, and the checker finds each breach."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_layout", REPO / "tools" / "check_layout.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_layout"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_package_keeps_its_shape():
    assert _checker().check(REPO) == []


def _package(tmp_path, files: dict[str, str]) -> Path:
    for name, text in {"msn_cli/__init__.py": "", **files}.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_each_breach_is_found(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(90))
    root = _package(tmp_path, {
        "msn_cli/a.py": "from msn_cli.b import _hidden\n",
        "msn_cli/b.py": "import msn_cli.a\n_hidden = 1\n",
        "msn_cli/c.py": "from msn_cli import b\n\nb._hidden\n",
        "msn_cli/d.py": f"def long():\n{long_body}\n",
        "msn_cli/e.py": "x = 1\n" * 601,
        "msn_cli/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import msn_cli.g\n",
        "msn_cli/g.py": "import msn_cli.f\n",
    })
    found = _checker().check(root)
    assert any("a.py:1: imports the private name _hidden from msn_cli.b" in p for p in found)
    assert any("c.py:3: uses the private name msn_cli.b._hidden" in p for p in found)
    assert any("long() is 91 lines" in p for p in found)
    assert any("e.py: 601 lines" in p for p in found)
    cycles = [p for p in found if p.startswith("import cycle")]
    assert cycles == ["import cycle: msn_cli.a -> msn_cli.b -> msn_cli.a"], found  # f<->g is typing only
