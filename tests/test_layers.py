# Copyright 2026 The vecdit authors. Apache-2.0.
"""The layers import one way: read from the sources' syntax trees (no module is imported).

    vecdit/ops                    imports nothing else of vecdit
    vecdit core (vecdit/*.py)     no processors, pipelines or samples (api.py and __init__.py excepted)
    processors/                   no pipelines, samples, lab or bench
    samples/                      no pipelines
    vecdit.pipelines              imported only by vecdit/bench and pipelines/ itself
    vecdit.processors             imported only by api.py, __init__.py, the tools (lab, bench), pipelines/, samples/
    private modules of vecdit.ops (`vecdit.ops._checks`, `...._attn_kernel`) only from inside vecdit/ops

Folders map to installed names through pyproject.toml's `package-dir` (`processors/` is
`vecdit.processors`); relative imports and imports inside functions count.
"""
from __future__ import annotations

import ast
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the repository root
    line: int
    importer: str  # the importing module's installed name
    target: str  # the imported module's installed name (a submodule where `from X import name` names one)

    def __str__(self):
        return f"{self.file}:{self.line} imports {self.target}"


def package_dirs() -> dict[str, Path]:
    """Installed package name -> its folder, from pyproject.toml."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in setup["package-dir"].items()}


@functools.cache
def module_files() -> dict[str, Path]:
    """Installed module name -> source file, for every .py file of the mapped folders."""
    dirs = package_dirs()
    modules = {}
    # deepest mapping first: `processors/` belongs to `vecdit.processors`, not to `vecdit`
    for package, folder in sorted(dirs.items(), key=lambda kv: -kv[0].count(".")):
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            modules.setdefault(name, path)
    return modules


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = str(path.relative_to(ROOT))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, name, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append(Import(rel, node.lineno, name, sub if sub in modules else module))
    # one entry per (line, module): `from X import a, b` names X once
    return list(dict.fromkeys(i for i in found if within(i.target, "vecdit")))


def all_imports() -> list[Import]:
    modules = module_files()
    return [i for name, path in modules.items() for i in imports_of(name, path, modules)]


def _private_ops_module(target: str) -> bool:
    return within(target, "vecdit.ops") and any(p.startswith("_") for p in target.split(".")[2:])


def _core(name: str) -> bool:
    path = module_files()[name]
    return path.parent == ROOT / "vecdit" and path.name not in ("api.py", "__init__.py")


# (rule, importer predicate, target predicate): an import matching both is a violation
RULES = {
    "vecdit/ops imports nothing else of vecdit": (
        lambda name: within(name, "vecdit.ops"), lambda target: not within(target, "vecdit.ops")),
    "no private module of vecdit.ops from outside vecdit/ops": (
        lambda name: not within(name, "vecdit.ops"), _private_ops_module),
    "the core imports no processors, pipelines or samples": (
        _core, lambda target: within(target, "vecdit.processors", "vecdit.pipelines", "vecdit.samples")),
    "only api.py, __init__.py, the tools, pipelines/ and samples/ import vecdit.processors": (
        lambda name: name != "vecdit" and not within(name, "vecdit.api", "vecdit.lab", "vecdit.bench",
                                                      "vecdit.processors", "vecdit.pipelines", "vecdit.samples"),
        lambda target: within(target, "vecdit.processors")),
    "only vecdit/bench and pipelines/ import vecdit.pipelines": (
        lambda name: not within(name, "vecdit.bench", "vecdit.pipelines"),
        lambda target: within(target, "vecdit.pipelines")),
    "samples/ imports no pipelines": (
        lambda name: within(name, "vecdit.samples"), lambda target: within(target, "vecdit.pipelines")),
    "processors/ imports no pipelines, samples, lab or bench": (
        lambda name: within(name, "vecdit.processors"),
        lambda target: within(target, "vecdit.pipelines", "vecdit.samples", "vecdit.lab", "vecdit.bench")),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_layer_rule(rule):
    importer_in, target_in = RULES[rule]
    bad = [i for i in all_imports() if importer_in(i.importer) and target_in(i.target)]
    assert not bad, f"{rule}, but:\n" + "\n".join(f"  {i}" for i in bad)


def test_the_scan_maps_folders_and_resolves_relative_imports():
    modules = module_files()
    assert modules["vecdit.processors.wan"] == ROOT / "processors" / "wan.py"
    assert modules["vecdit.ops.selection"] == ROOT / "vecdit" / "ops" / "selection" / "__init__.py"
    seen = {(i.importer, i.target) for i in all_imports()}
    # `from .video_io import read_video` in samples/compare.py; `from .rule import ...` in a subpackage
    assert ("vecdit.samples.compare", "vecdit.samples.video_io") in seen
    assert ("vecdit.ops.selection.op", "vecdit.ops.selection.rule") in seen
    # a relative import in a package's __init__ resolves inside that package
    assert ("vecdit.ops", "vecdit.ops.selection") in seen
    assert _private_ops_module("vecdit.ops._checks") and _private_ops_module("vecdit.ops.attention._attn_kernel")
    assert not _private_ops_module("vecdit.ops.selection.rule") and _core("vecdit.config") and not _core("vecdit.api")
