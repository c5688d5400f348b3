"""The package's import rules that import-linter (the layer order, `make test`) does not check: no module
reaches into another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import posttrain

PACKAGE = Path(posttrain.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(source: str, module: str) -> list[str]:
    """`from posttrain.x import _name` and `x._name` (x an imported posttrain module) in one module's source,
    other than the module's own names."""
    tree = ast.parse(source)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "posttrain":
            for alias in node.names:
                if _private(alias.name) and node.module != module:
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "posttrain":
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules and modules[node.value.id] != module):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_finds_both_forms_and_spares_a_module_s_own_names():
    src = ("from posttrain.data.records import _as_prompt, as_prompt\nfrom posttrain.methods import rso\n"
           "from posttrain.x import _own\nrso._samples_file(1)\nrso.samples_file(1)\n")
    assert private_imports(src, "posttrain.x") == ["line 1: from posttrain.data.records import _as_prompt",
                                                   "line 4: rso._samples_file"]


def test_no_module_imports_a_private_name_of_another():
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = private_imports(path.read_text(), _module_name(path))
        if found:
            bad[str(path.relative_to(PACKAGE.parent))] = found
    assert bad == {}
