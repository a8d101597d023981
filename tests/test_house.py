"""The shape of the code, read from the source tree: no patched library internals, no circle of imports,
stage code free of Django and Dramatiq, and the fault run kept out of the product."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from .conftest import ROOT

PRODUCT = ("gedge_site", "jobs", "stages")
# Libraries whose objects the product must never change: their internals are not an interface.
GUARDED = ("daphne", "twisted", "channels", "channels_redis")


def product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file, function-level ones too, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


def library_patches(source: str, filename: str = "<source>") -> list[str]:
    """Assignments to an attribute of a guarded library's object, setattr() on one, and imports of a guarded
    library's private names, as 'line: what'."""
    tree = ast.parse(source, filename)
    bound: set[str] = set()  # names this module bound to something of a guarded library
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in GUARDED:
                    bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in GUARDED and not node.level:
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if alias.name.startswith("_"):
                    problems.append(f"{node.lineno}: imports the private {node.module}.{alias.name}")

    def root(expr: ast.expr) -> str | None:
        while isinstance(expr, ast.Attribute | ast.Subscript):
            expr = expr.value
        return expr.id if isinstance(expr, ast.Name) else None

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and root(leaf) in bound:
                    problems.append(f"{node.lineno}: assigns {ast.unparse(leaf)}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr")
                and node.args and root(node.args[0]) in bound):
            problems.append(f"{node.lineno}: {node.func.id}() on {ast.unparse(node.args[0])}")
    return problems


def test_the_patch_finder_finds_patches():
    """The checker itself, on the kinds of patch the product once had."""
    assert library_patches("from daphne.server import Server\nServer.create_application = f\n")
    assert library_patches("from daphne.http_protocol import HTTPFactory as F\nF.log = lambda self, r: None\n")
    assert library_patches("from daphne import http_protocol\nhttp_protocol.http = object()\n")
    assert library_patches("import twisted.web.http\ntwisted.web.http.Request.x = 1\n")
    assert library_patches("from channels_redis.pubsub import L\nsetattr(L, 'x', 1)\n")
    assert library_patches("from twisted.python.deprecate import _ModuleProxy\n")
    assert not library_patches("from channels.layers import get_channel_layer\nlayer = get_channel_layer()\n")
    assert not library_patches("from channels.generic.websocket import C\nclass J(C):\n    groups = []\n")


def test_no_product_module_imports_twisted_or_patches_a_library():
    problems = []
    for path in product_files():
        rel = str(path.relative_to(ROOT))
        problems += [f"{rel}: imports {name}" for name, _ in imported_modules(path)
                     if name.split(".")[0] == "twisted"]
        problems += [f"{rel}:{problem}" for problem in library_patches(path.read_text(), rel)]
    assert problems == []


def test_no_circle_of_imports():
    """Every import counts, function-level ones too (a late import hides a circle, it does not remove it)."""
    modules = {module_name(path): path for path in product_files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target, names in imported_modules(path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in modules and candidate != name:
                    edges.add(candidate)
                    break
        graph[name] = edges
    state: dict[str, int] = {}  # 1: on the path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == [], circles
    assert "jobs.lifecycle.runner" in graph["jobs.actors"]  # the graph is real: the actors run stages


def test_stage_code_imports_neither_django_nor_dramatiq():
    for path in sorted((ROOT / "stages").rglob("*.py")):
        for name, _ in imported_modules(path):
            assert name.split(".")[0] not in ("django", "dramatiq", "jobs", "gedge_site"), (path.name, name)


def test_the_fault_run_is_not_in_the_product():
    """faultlab/ kills processes and restarts Redis and PostgreSQL: it is in neither the package nor the
    images, and its command exists only where GEDGE_FAULT_LAB is set."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "faultlab*" not in project["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line]
    assert copied and not any("faultlab" in source or source == "." for source in copied)
    assert "faultlab" in (ROOT / ".dockerignore").read_text().split()
    for path in product_files():
        assert not any(name.split(".")[0] == "faultlab" for name, _ in imported_modules(path)), path

    env = {k: v for k, v in os.environ.items() if k != "GEDGE_FAULT_LAB"}
    refused = subprocess.run([sys.executable, "manage.py", "fault_test", "--help"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Unknown command: 'fault_test'" in refused.stderr
    allowed = subprocess.run([sys.executable, "manage.py", "fault_test", "--help"], cwd=ROOT,
                             env={**env, "GEDGE_FAULT_LAB": "1"}, capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0 and "--kill-every" in allowed.stdout
