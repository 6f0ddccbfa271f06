"""The layers of the package: readers of the results store run without torch, and no folder imports from a
folder above it. Both are checked on the real package, in fresh interpreters."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "whatmatters"
HEAVY = ("torch", "transformers", "lm_eval", "accelerate", "peft", "torchao")
# Bottom to top: a module may import from its own layer and the layers below it only.
LAYERS = ("", "records", "method", "eval", "measure", "export", "report", "apps")
TORCH_FREE = ("records", "report")


def _modules(package: str) -> list[str]:
    folder = SRC / package if package else SRC
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    prefix = f"whatmatters.{package}." if package else "whatmatters."
    return [prefix + n for n in names]


@pytest.mark.parametrize("package", TORCH_FREE)
def test_records_and_report_import_no_torch_in_a_fresh_interpreter(package):
    names = _modules(package)
    probe = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert set(names) <= loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else 0


def _imports(path: Path) -> set[str]:
    """Every whatmatters module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("whatmatters"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("whatmatters")}
    return found


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for target in _imports(path):
            if _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_the_module_graph_has_no_cycle():
    paths = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in SRC.rglob("*.py")}  # fmt: skip
    graph = {m: {t for t in _imports(p) if t in paths and t != m} for m, p in paths.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert state.get(target) != 1, " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
