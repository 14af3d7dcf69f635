"""The repository's layout rules, checked: one home per rule (docs/DESIGN.md §6).

These read files as text or syntax trees; nothing here runs a kernel.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rspose_kernels"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, anywhere in the file (a function-level import
    is as much a dependency as a top-level one)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` names the submodule when there is one, else pkg itself.
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                       for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def test_no_import_cycle_inside_the_package():
    mods = _modules()
    graph = {n: _imports(n, p, set(mods)) for n, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, f"import cycles: {cycles}"


def test_cost_model_is_a_leaf():
    mods = _modules()
    name = "rspose_kernels.backends.cost_model"
    assert _imports(name, mods[name], set(mods)) == set()
    text = mods[name].read_text()
    for backend in ("cuda", "triton", "_C", "native"):
        assert not re.search(rf"[\"']{backend}[\"']|\b_C\b|\bnative\b", text), backend


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def _count(files, pattern) -> list[str]:
    rx = re.compile(pattern)
    return [f"{f.relative_to(ROOT)}:{i}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if rx.search(line.split("#")[0] if f.suffix == ".py" else line.split("//")[0])]


PYTHON = ["rspose_kernels/*.py", "rspose_kernels/**/*.py"]
BACKENDS = ["rspose_kernels/backends/*.py"]   # decode.py has a log floor of the same value
CPP = ["csrc/*", "csrc/**/*"]


@pytest.mark.parametrize("what, pattern, python", [
    ("the bucketed resolution bound 2^-20", r"2(\.0)?\s*\*\*\s*-20|0x1p-20", PYTHON),
    ("the span limit 2^1000", r"2(\.0)?\s*\*\*\s*1000|0x1p\+?1000", PYTHON),
    ("the ε of the ranking term", r"\b1e-10\b|1\.0e-10", BACKENDS),
])
def test_each_constant_has_one_home_per_language(what, pattern, python):
    for files in (python, CPP):
        hits = _count(_tracked(*files), pattern)
        assert len(hits) == 1, f"{what}: {hits}"


def test_the_algorithm_codes_have_one_home_in_python():
    hits = _count(_tracked(*PYTHON), r"[\"']bucketed[\"']\s*:\s*1")
    assert len(hits) == 1, hits


def test_no_reference_to_a_document_outside_the_repository():
    hits = _count(_tracked(), "SPEC" + r" §|\.\./shared")   # split: not to match itself
    assert not hits, hits


def test_the_benchmark_cli_is_thin():
    assert len((ROOT / "bench" / "run.py").read_text().splitlines()) <= 250
