"""The package's layers: each module imports only from its own layer or the layers below it.

    core < components < data < metrics < sampling < stages < apps < cli

Imports inside functions count too (they are how a layer would sneak upwards unseen).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ldm

LAYERS = ["core", "components", "data", "metrics", "sampling", "stages", "apps", "cli"]
PACKAGE = Path(ldm.__file__).parent


def layer_of(module: str) -> int | None:
    """The layer index of a dotted module name inside ldm (None for ldm itself and ldm.configs)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "ldm" or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every ldm import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    here = ["ldm", *path.relative_to(PACKAGE).with_suffix("").parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:-node.level] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] if base.count(".") == 0 else [base]
            found += [(node.lineno, name) for name in names if name.startswith("ldm.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ldm.")]
    return found


def test_every_module_belongs_to_a_layer():
    top_level = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert top_level == [], f"modules at the top of ldm/ belong in a layer: {top_level}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(LAYERS), folders


def test_imports_only_go_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(["ldm", *path.relative_to(PACKAGE).with_suffix("").parts])
        own = layer_of(module)
        if own is None:
            continue
        for line, name in imported_modules(path):
            target = layer_of(name)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[own]}) imports {name} "
                              f"({LAYERS[target]})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)
