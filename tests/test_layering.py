"""Layering of the package: no import cycles, a light ``metacompress --help``, the global flags.

The import graph is read from the source with ``ast``: every ``import``/``from … import`` counts,
at module level and inside functions alike (a function-level import is a dependency too, only a
later one) — except those under ``if TYPE_CHECKING:``, which exist for annotations only. Importing ``a.b.c`` does not count as importing its parent packages ``a`` and ``a.b``
(a package's ``__init__`` importing its own modules is not a cycle).
"""

import ast
import importlib.metadata
import io
import logging
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import metacompress
from metacompress.cli import main

PACKAGE_ROOT = Path(metacompress.__file__).resolve().parent

# Cycles are asserted absent where they touch a module under one of these prefixes: the whole package.
CHECKED = {"metacompress"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def known_prefix(name: str, modules) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules`` (an imported class or
    function counts as its module), or None for modules outside the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        yield from runtime_nodes(node)


def imported_modules(tree: ast.AST, name: str, is_package: bool, modules) -> set[str]:
    targets = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets |= {known_prefix(alias.name, modules) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else known_prefix(base, modules))
    return targets - {None, name}


def import_graph() -> dict[str, set[str]]:
    """Each module of the package → the modules of the package it imports."""
    files = {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}
    return {name: imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path)), name,
                                   path.name == "__init__.py", files)
            for name, path in files.items()}


def top_level_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between the package's top-level parts (metacompress.cli, metacompress.codecs, …)."""
    def part(name):
        return ".".join(name.split(".")[:2])

    collapsed = {}
    for name, targets in graph.items():
        collapsed.setdefault(part(name), set()).update(part(t) for t in targets)
    return {name: targets - {name} for name, targets in collapsed.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest import path from ``start`` back to itself through ``within``: [start, …, start]."""
    came_from, queue = {}, deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph.get(node, set()) & within):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1] + [start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"{start} is on no cycle within {sorted(within)}")


def checked(name: str, scope=CHECKED) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in scope)


def cycles_touching(graph: dict[str, set[str]], scope=CHECKED) -> list[str]:
    """One cycle, as "a → b → a", for each strongly connected component with a module in ``scope``."""
    found = []
    for component in strongly_connected(graph):
        inside = sorted(name for name in component if checked(name, scope))
        if inside:
            found.append(" → ".join(shortest_cycle(graph, inside[0], component)))
    return found


def test_the_cycle_finder_reports_the_cycle_it_finds():
    graph = {"m.a": {"m.b"}, "m.b": {"m.c"}, "m.c": {"m.a", "m.d"}, "m.d": set(), "m.e": {"m.f"}, "m.f": {"m.e"}}
    assert cycles_touching(graph, {"m.a"}) == ["m.a → m.b → m.c → m.a"]
    assert sorted(cycles_touching(graph, {"m"})) == ["m.a → m.b → m.c → m.a", "m.e → m.f → m.e"]
    assert cycles_touching(graph, {"m.d"}) == []


def test_the_import_graph_sees_function_level_and_relative_imports():
    modules = {"p", "p.a", "p.b", "p.sub", "p.sub.c"}
    tree = ast.parse("import p.a\ndef f():\n    from p.b import thing\n    from . import c\n    from .. import a\n"
                     "    import numpy\n")
    assert imported_modules(tree, "p.sub", True, modules) == {"p.a", "p.b", "p.sub.c"}
    assert imported_modules(tree, "p.sub.c", False, modules) == {"p.a", "p.b"}


@pytest.mark.parametrize("granularity", ["modules", "top-level parts"])
def test_no_import_cycle_touches_the_checked_modules(granularity):
    graph = import_graph()
    assert "metacompress.cli.common" in graph and graph["metacompress.cli"]  # the walk found the package
    if granularity == "top-level parts":
        graph = top_level_graph(graph)
    cycles = cycles_touching(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_command_modules_depend_on_common_only():
    graph = import_graph()
    commands = {name for name in graph if name.startswith("metacompress.cli.")} - {"metacompress.cli.common",
                                                                                   "metacompress.cli.__main__"}
    def cli_modules(targets):
        return {t for t in targets if t.startswith("metacompress.cli")}

    for name in commands:
        assert not cli_modules(graph[name]) - {"metacompress.cli.common"}, name
    assert not cli_modules(graph["metacompress.cli.common"])
    assert not {name for name, targets in graph.items() if not name.startswith("metacompress.cli")
                and cli_modules(targets)}  # the library never imports the command line


HEAVY = ("metacompress.bench", "matplotlib")


@pytest.mark.parametrize("argv, heavy", [
    (["--help"], HEAVY + ("torch",)),  # no torch at all: the help costs a small part of importing torch
    (["train", "--help"], HEAVY),
    (["archive", "list", "--help"], HEAVY + ("torch",)),
])
def test_help_does_not_import_the_benchmarks(argv, heavy):
    code = (f"import sys\nfrom metacompress.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print('imported:', *[m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "usage: metacompress" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "imported:", argv


def test_version(capsys):
    out = subprocess.run([sys.executable, "-m", "metacompress.cli", "--version"], capture_output=True, text=True,
                         timeout=300)
    expected = f"metacompress {importlib.metadata.version('metacompress')}"
    assert out.returncode == 0 and out.stdout == expected + "\n" and out.stderr == ""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code in (0, None) and capsys.readouterr().out == expected + "\n"


@pytest.fixture
def damaged_archive(tmp_path):
    """An archive whose item 1 fails its CRC: ``archive list`` warns about it."""
    import numpy as np

    from metacompress.codecs.archive import Archive, ArchiveHeader, ArchiveItem, archive_bytes

    rng = np.random.default_rng(0)
    data = bytearray(archive_bytes(ArchiveHeader("image", "uint8", 5, True, "ab" * 32, None),
                                   [ArchiveItem((8, 8, 3), rng.bytes(30)) for _ in range(3)]))
    data[Archive(io.BytesIO(bytes(data))).offsets[1] + 2] ^= 0x04
    path = tmp_path / "damaged.mcza"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def package_log_level():
    logger = logging.getLogger("metacompress")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_quiet_suppresses_warnings_and_verbose_shows_information(damaged_archive, package_log_level, caplog):
    out = subprocess.run([sys.executable, "-m", "metacompress.cli", "archive", "list", str(damaged_archive)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "metacompress: " in out.stderr and "1 damaged item(s)" in out.stderr
    out = subprocess.run([sys.executable, "-m", "metacompress.cli", "-q", "archive", "list", str(damaged_archive)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stderr == "" and "? (damaged)" in out.stdout
    # in this process (pytest owns the logging handlers): the level main sets on the package's loggers
    for flags, level, warned in (([], logging.WARNING, True), (["-q"], logging.ERROR, False),
                                 (["--verbose"], logging.INFO, True)):
        caplog.clear()
        assert main(flags + ["archive", "list", str(damaged_archive)]) == 0
        assert package_log_level.getEffectiveLevel() == level
        assert any("damaged item(s)" in r.getMessage() for r in caplog.records) == warned
    assert main(["-q", "-v", "archive", "list", str(damaged_archive)]) == 2  # one or the other
