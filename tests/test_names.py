"""No two public classes share a name: ``Sender`` means one thing wherever it is read."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.test_imports import PACKAGE, module_name


def test_no_two_public_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(module_name(path))
    assert {name: mods for name, mods in where.items() if len(mods) > 1} == {}
