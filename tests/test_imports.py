"""The import structure of ``freebind``: no import cycle (every import counts, also the ones
inside functions), every module importable on its own, and ``import freebind`` cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "freebind"


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the freebind modules it imports anywhere in its source. ``from pkg import
    sub`` of submodules is an edge to the submodules only; an import of a name defined in
    a package is an edge to the package."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                names = subs if all(s in mods for s in subs) else [base, *subs]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("freebind") else None
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_freebind():
    graph = import_graph()
    assert "freebind.spaces.weights" in graph and "freebind.run.partitions" in graph
    assert "freebind.spaces.weights" in graph["freebind.spaces.clap"]
    assert cycles(graph) == []
    # the weights layer knows no family
    assert not {m for m in graph["freebind.spaces.weights"]
                if m.rpartition(".")[2] in ("clap", "imagebind", "internvl", "openclip",
                                            "minilm")}


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """One interpreter forks a child per module; the children start with no freebind module
    loaded (the parent loads only the third-party packages, to keep this fast)."""
    script = textwrap.dedent("""
        import os, sys
        import numpy, torch  # third-party only: no freebind module is loaded here
        assert not [m for m in sys.modules if m.startswith("freebind")]
        failed = []
        for name in sys.argv[1:]:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    __import__(name)
                    code = 0
                except BaseException as exc:
                    os.write(w, f"{type(exc).__name__}: {exc}".encode()[:500])
                    code = 1
                os._exit(code)
            os.close(w)
            _, status = os.waitpid(pid, 0)
            msg = os.read(r, 600).decode()
            os.close(r)
            if status:
                failed.append(f"{name}: {msg}")
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
    """)
    names = sorted(modules())
    r = subprocess.run([sys.executable, "-c", script, *names], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_freebind_is_cheap_and_the_api_is_lazy():
    code = ("import sys, freebind; "
            "names = ['open', 'embed', 'plan_embed', 'evaluate', 'tune', 'load', 'plan']; "
            "assert all(n in dir(freebind) for n in names), dir(freebind); "
            "print(sorted(m for m in sys.modules if m in ('torch', 'numpy', 'freebind.fusion.fused',"
            " 'freebind.run.partitions')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


#: The stages of the data path, lowest first (docs/architecture.md, "Layout"): a module
#: imports only from its own package and the packages listed before it. The root modules
#: (``freebind``, the public facades ``freebind.embed``/``api``/``export``) sit above all.
LAYERS = ("util", "data", "spaces", "mini", "algebra", "fusion", "run", "build", "evaluate",
          "search", "serve", "share")


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS.index(parts[1])
    return len(LAYERS)          # the root package and its public facade modules


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                  if layer_of(t) > layer_of(m))


def test_the_layer_check_finds_an_upward_import():
    assert upward_imports({"freebind.data.store": {"freebind.fusion.graph"}}) == [
        "freebind.data.store -> freebind.fusion.graph"]
    assert upward_imports({"freebind.spaces.clap": {"freebind"}}) == [
        "freebind.spaces.clap -> freebind"]
    assert upward_imports({"freebind.build.orchestrator": {"freebind.run.engines"}}) == []


def test_imports_point_one_way_down_the_data_path():
    graph = import_graph()
    assert set(LAYERS) == {m.split(".")[1] for m in graph if m.count(".") >= 1} - {
        "embed", "api", "export"}
    assert upward_imports(graph) == []
