"""The floors of the design, checked on the source: each imports only from floors below it."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "l1backends"
ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the l1backends modules that ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "l1backends" or m.startswith("l1backends.")}


def floor(module: str) -> int:
    if module == "l1backends._typing":
        return 0
    if module in ("l1backends.semantics", "l1backends.numerics"):
        return 1
    if module.split(".")[:2] == ["l1backends", "registry"]:
        return 2
    if module.startswith("l1backends._backends"):
        return 3
    return 4


def same_package(a: str, b: str) -> bool:
    """Whether two modules belong to one package of a floor (``registry`` and its parts)."""
    return a.split(".")[:2] == b.split(".")[:2]


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def known_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").exists() or (
        ROOT / relative / "__init__.py"
    ).exists()


def test_each_floor_imports_only_from_floors_below() -> None:
    violations = []
    for path in sources():
        importer = module_name(path)
        for imported in imported_modules(path):
            if not known_module(imported):
                continue  # a name imported from a module, not a module
            if floor(imported) > floor(importer) or (
                floor(imported) == floor(importer) < 3 and not same_package(imported, importer)
            ):
                violations.append(f"{importer} imports {imported}")
    assert violations == []


def backend_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "_backends" or parts[2].startswith("_"):
        return None
    return parts[2]


def test_backends_do_not_import_each_other_or_the_api() -> None:
    violations = []
    for path in sources():
        importer = module_name(path)
        own = backend_of(importer)
        if own is None:
            continue
        for imported in imported_modules(path):
            other = backend_of(imported) if known_module(imported) else None
            if other is not None and other != own:
                violations.append(f"{importer} imports backend {imported}")
            if imported in ("l1backends", "l1backends.api"):
                violations.append(f"{importer} imports the public API {imported}")
    assert violations == []


def test_registry_names_backends_lazily() -> None:
    registry_imports = set()
    for path in (PACKAGE / "registry").glob("*.py"):
        registry_imports |= imported_modules(path)
    assert not any(m.startswith("l1backends._backends") for m in registry_imports)


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the 'test' extra)")
    result = subprocess.run(
        [ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [ruff, "format", "--check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    """The package type-checks under the configuration in ``pyproject.toml``."""
    mypy = shutil.which("mypy") or str(Path(sys.executable).parent / "mypy")
    if not Path(mypy).exists():
        pytest.skip("mypy is not installed (it is in the 'test' extra)")
    result = subprocess.run(
        [mypy, "--no-incremental", "--cache-dir", os.devnull],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The CUDA kernels launched from the host, whose arguments are the launch's buffers.
CUDA_ENTRY_POINTS = {
    ("numba_cuda/_kernels.py", "dense_pass"),
    ("numba_cuda/_kernels.py", "strided_pass"),
}


def test_backend_functions_take_at_most_ten_parameters() -> None:
    """Arguments travel as a few records and tuples, not as dozens of loose names: at most
    10 parameters per function in the backends, 16 for a CUDA kernel's entry point."""
    backends = PACKAGE / "_backends"
    too_many = []
    for path in sorted(backends.rglob("*.py")):
        where = path.relative_to(backends).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            arguments = node.args
            count = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
            limit = 16 if (where, node.name) in CUDA_ENTRY_POINTS else 10
            if count > limit:
                too_many.append(f"{where}:{node.lineno} {node.name} takes {count} (> {limit})")
    assert not too_many, "\n".join(too_many)
