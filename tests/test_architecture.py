"""The layers of docs/architecture.md, checked on the source with the stdlib ``ast`` (nothing is imported).

Every module of ``napari_m2mrf``, ``training`` and ``sample_data`` is parsed; an *import* is any
``import``/``from … import`` statement (module level, inside functions, under ``TYPE_CHECKING``;
relative ones resolved), an ``importlib.import_module("…")`` / ``__import__("…")`` call with a
literal name, a ``lazy_loader.attach`` submodule, and a string literal that is exactly the dotted
name of a project module (the deferred-import lists of the widgets). ``importlib.resources.files``
lookups of package data are not imports; the core may make one. Each rule is one parametrised test; a failure
names ``file:line`` of every offending import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGES = ("napari_m2mrf", "training", "sample_data")

# The napari face: the only modules that may import Qt or napari, and that nothing below may import.
FACE = (
    "napari_m2mrf.widgets",
    "napari_m2mrf.napari_io",
    "napari_m2mrf._samples",
    "napari_m2mrf.demo",
    "napari_m2mrf.display",
)
# Entry points above everything: the command line and ``python -m napari_m2mrf``.
ENTRY = ("napari_m2mrf.cli", "napari_m2mrf.__main__")
QT_AND_NAPARI = ("qtpy", "napari", "superqt", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")
# Development recipes: they train with the trainer and score the result with the plugin's inference,
# as a user would, so they sit above both (the trainer proper never imports inference).
RECIPES = "training.recipes"


@dataclass(frozen=True)
class Import:
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the three packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_package(name: str) -> bool:
    path = project_modules().get(name)
    return path is not None and path.name == "__init__.py"


def _resolve(module: str, level: int, current: str) -> str:
    if level == 0:
        return module
    base = current.split(".") if _is_package(current) else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _resource_lookups(tree: ast.AST) -> list[ast.Constant]:
    """The package names of ``importlib.resources.files("package")`` calls: package data, not imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "files" and isinstance(node.args[0].value, str):
                found.append(node.args[0])
    return found


def imports_in_source(source: str, module: str, path: str, known: Iterable[str] = ()) -> list[Import]:
    """Every import of ``source`` (the text of ``module``); ``known`` are the project's module names."""
    known = set(known)
    tree = ast.parse(source)
    skipped = _docstring_nodes(tree) | {id(node) for node in _resource_lookups(tree)}
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        if target:
            found.append(Import(target, path, node.lineno))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, module)
            add(base, node)
            for alias in node.names:  # ``from package import submodule``
                if f"{base}.{alias.name}" in known:
                    add(f"{base}.{alias.name}", node)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0] if node.args else None
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) and isinstance(first.value, str):
                package = node.args[1] if len(node.args) > 1 else None
                level = len(first.value) - len(first.value.lstrip("."))
                if level and isinstance(package, ast.Constant) and isinstance(package.value, str):
                    add(_resolve(first.value[level:], level, package.value + ".__init__"), node)
                else:
                    add(first.value, node)
            elif name == "attach":  # lazy_loader.attach(__name__, submodules=[...], submod_attrs={...})
                for keyword in node.keywords:
                    values: list[ast.expr] = []
                    if keyword.arg == "submod_attrs" and isinstance(keyword.value, ast.Dict):
                        values = [k for k in keyword.value.keys if k is not None]
                    elif keyword.arg == "submodules" and isinstance(keyword.value, (ast.List, ast.Tuple, ast.Set)):
                        values = list(keyword.value.elts)
                    for value in values:
                        if isinstance(value, ast.Constant) and isinstance(value.value, str):
                            add(f"{module}.{value.value}", value)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "." in node.value  # a dotted module path, not a bare word such as a metadata key
            and node.value in known
            and node.value != module
            and id(node) not in skipped
        ):
            add(node.value, node)  # a module named in a deferred-import list
    return list(dict.fromkeys(found))  # an import_module("...") literal is seen twice


@cache
def all_imports() -> dict[str, tuple[Import, ...]]:
    known = project_modules()
    return {
        name: tuple(imports_in_source(path.read_text(), name, path.relative_to(REPO_ROOT).as_posix(), known))
        for name, path in known.items()
    }


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _modules(predicate) -> list[str]:
    return sorted(name for name in project_modules() if predicate(name))


def _offending(module: str, forbidden: Iterable[str]) -> list[Import]:
    forbidden = tuple(forbidden)
    return [i for i in all_imports()[module] if _within(i.target, forbidden)]


def _explain(rule: str, offending: list[Import]) -> str:
    return rule + ":\n  " + "\n  ".join(str(i) for i in offending)


def is_face(name: str) -> bool:
    return _within(name, FACE)


def is_core(name: str) -> bool:
    return name.startswith("napari_m2mrf") and not is_face(name) and not _within(name, ENTRY)


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", _modules(lambda n: _within(n, ["sample_data"])))
def test_sample_data_imports_neither_the_trainer_nor_the_napari_face(module: str) -> None:
    bad = _offending(module, ["training", *FACE, *ENTRY])
    assert not bad, _explain("sample_data is a leaf of generators: no training, napari face or CLI imports", bad)


@pytest.mark.parametrize("module", _modules(is_core))
def test_the_core_imports_neither_sample_data_nor_the_trainer(module: str) -> None:
    bad = _offending(module, ["sample_data", "training"])
    assert not bad, _explain(
        "the napari_m2mrf core (io, inference, models, sampling, metrics, jobs, cache, ...) imports no sample_data or training "
        "(bundled checkpoints are package data found with importlib.resources)",
        bad,
    )


@pytest.mark.parametrize("module", _modules(is_core))
def test_the_core_imports_neither_the_napari_face_nor_the_command_line(module: str) -> None:
    bad = _offending(module, [*FACE, *ENTRY])
    assert not bad, _explain("the core never imports the napari face or the command line", bad)


@pytest.mark.parametrize("module", _modules(lambda n: _within(n, ["training"]) and not _within(n, [RECIPES])))
def test_the_trainer_imports_neither_inference_nor_the_napari_face(module: str) -> None:
    bad = _offending(module, ["napari_m2mrf.inference", *FACE, *ENTRY])
    assert not bad, _explain(
        "the trainer uses the core below inference (models, io, sampling, metrics, jobs); "
        "what it shares with inference belongs in napari_m2mrf.sampling or below",
        bad,
    )


@pytest.mark.parametrize("module", _modules(lambda n: _within(n, [RECIPES])))
def test_the_recipes_import_no_napari_face(module: str) -> None:
    bad = _offending(module, [*FACE, *ENTRY])
    assert not bad, _explain("training recipes run headless: no napari face or CLI imports", bad)


@pytest.mark.parametrize("module", _modules(lambda n: not is_face(n)))
def test_only_the_napari_face_imports_qt_or_napari(module: str) -> None:
    bad = _offending(module, QT_AND_NAPARI)
    assert not bad, _explain(f"only {', '.join(FACE)} may import Qt, napari, superqt or magicgui", bad)


@pytest.mark.parametrize("module", _modules(lambda n: _within(n, ["napari_m2mrf.io", "napari_m2mrf.models"])))
def test_io_and_models_never_import_inference(module: str) -> None:
    bad = _offending(module, ["napari_m2mrf.inference"])
    assert not bad, _explain("io and models sit below inference", bad)


@pytest.mark.parametrize("module", _modules(lambda n: _within(n, ["napari_m2mrf.sampling", "napari_m2mrf.jobs"])))
def test_sampling_and_jobs_stay_pure(module: str) -> None:
    bad = _offending(module, ["torch", "napari_m2mrf.inference", "napari_m2mrf.models", "napari_m2mrf.io"])
    assert not bad, _explain("sampling and jobs are numpy/scipy/stdlib only, below io, models and inference", bad)


def test_the_core_finds_bundled_package_data_in_one_place() -> None:
    lookups = [
        f"{path.relative_to(REPO_ROOT).as_posix()}:{node.lineno}: files({node.value!r})"
        for name, path in project_modules().items()
        if is_core(name)
        for node in _resource_lookups(ast.parse(path.read_text()))
    ]
    assert len(lookups) <= 1, "the core looks up package data in more than one place:\n  " + "\n  ".join(lookups)


# -- no cycles between folders ------------------------------------------------------------------


def folder_of(name: str) -> str:
    """The node of the folder graph: ``napari_m2mrf.<first part>`` in the plugin, else the package."""
    parts = name.split(".")
    if parts[0] == "napari_m2mrf" and len(parts) > 1:
        return ".".join(parts[:2])
    if name == RECIPES or name.startswith(RECIPES + "."):
        return RECIPES
    return parts[0]


@cache
def folder_graph() -> dict[str, dict[str, Import]]:
    """folder -> {folder it imports: one import that makes the edge}."""
    graph: dict[str, dict[str, Import]] = {}
    for module, imports in all_imports().items():
        source = folder_of(module)
        edges = graph.setdefault(source, {})
        for item in imports:
            if item.target.split(".")[0] not in PACKAGES:
                continue
            target = folder_of(item.target)
            if target != source and target in {folder_of(m) for m in project_modules()}:
                edges.setdefault(target, item)
    return graph


def _path_back(graph: dict[str, dict[str, Import]], start: str) -> list[Import] | None:
    """The edges of one cycle through ``start``, or None."""
    stack = [(start, [])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for target, item in graph.get(node, {}).items():
            if target == start:
                return [*path, item]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, item]))
    return None


@pytest.mark.parametrize("folder", sorted({folder_of(m) for m in project_modules()}))
def test_no_import_cycle_through_a_folder(folder: str) -> None:
    cycle = _path_back(folder_graph(), folder)
    assert cycle is None, _explain(f"import cycle through {folder}", cycle or [])


# -- the checker itself --------------------------------------------------------------------------


def test_the_checker_sees_lazy_relative_and_string_imports() -> None:
    source = '''
"""napari_m2mrf.widgets is named in this docstring only."""
from typing import TYPE_CHECKING
import importlib
import lazy_loader
if TYPE_CHECKING:
    from napari.types import LayerData
from . import ngff
from ..models import deform

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={"pyramid": ["Pyramid"]})
MODULES = ("napari_m2mrf.inference.devices",)

def later():
    import qtpy.QtCore
    importlib.import_module("training.loop")
    return importlib.resources.files("napari_m2mrf.widgets")
'''
    known = {"napari_m2mrf.io.ngff", "napari_m2mrf.io.pyramid", "napari_m2mrf.inference.devices", "napari_m2mrf.widgets"}
    found = {i.target for i in imports_in_source(source, "napari_m2mrf.io", "x.py", known)}
    assert {
        "napari.types",
        "napari_m2mrf.io.ngff",
        "napari_m2mrf.models",
        "napari_m2mrf.io.pyramid",
        "napari_m2mrf.inference.devices",
        "qtpy.QtCore",
        "training.loop",
    } <= found
    assert "napari_m2mrf.widgets" not in found
