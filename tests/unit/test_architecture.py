"""The layout's rules, read from the source: dependencies run one way, and no import is made late
to dodge a cycle.

Every import is read with `ast`, at module level or inside a function, TYPE_CHECKING ones too.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from functions.common.settings import REPO_ROOT

# What each package of functions/ may import besides itself: the one direction of dependencies.
# The apps (gateway, bot_manager, worker, transcription, broker) sit on top and import no app.
ALLOWED = {
    "common": set(),
    "meetings": {"common"},
    "recordings": {"common"},  # meetings' audio: kept by bot-manager, served by the gateway, purged by the worker
    "accounts": {"common", "webhooks"},  # webhooks: `vexa admin` manages users' endpoints too
    "webhooks": {"common", "meetings"},  # meetings: the feed it delivers
    "bot_manager": {"common", "meetings", "recordings"},
    "worker": {"common", "meetings", "recordings", "webhooks"},
    "gateway": {"common", "accounts", "meetings", "recordings", "webhooks"},  # meetings: the live feeds it streams
    "transcription": {"common"},
    "finalizer": {"common", "meetings", "recordings", "transcription"},  # the final pass: a program of its own
    "broker": {"common"},
}
BOT_MAY_IMPORT = {"functions.common"}  # the bot image carries functions/common/ and nothing else of functions/
# Imported inside a function, on purpose: each loads a large optional dependency (torch, the
# Kubernetes client, PyAV, Playwright) that a process should pay for only when it uses it.
LATE_ON_PURPOSE = {
    "functions.transcription.engines.whisperx",
    "functions.transcription.engines.faster_whisper",
    "functions.worker.orchestrator.kubernetes",
    "bot.sources.file",
    "bot.sources.browser",
}


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    target: str  # module name (or a name inside it)
    late: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> list[Import]:
    """Every import in the file at `path`, which is module `name` (by default: by its place in the repo)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, late: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = late or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(name, alias.name, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from . import x` may import a module x: count both the package and its member.
                found.extend(Import(name, f"{base}.{alias.name}", inside) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return found


def our_imports(*folders: str) -> list[Import]:
    return [
        i
        for folder in folders
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        for i in imports_of(path)
        if i.target.split(".")[0] in ("functions", "bot")
    ]


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "functions" and len(parts) > 1 else None


def test_the_allowed_dependencies_form_no_cycle() -> None:
    TopologicalSorter(ALLOWED).prepare()  # raises CycleError


def test_functions_packages_import_only_what_they_may() -> None:
    wrong = defaultdict(set)
    for i in our_imports("functions"):
        source, target = package_of(i.importer), package_of(i.target)
        if target is not None and source != target and target not in ALLOWED[source]:
            wrong[f"{source} -> {target}"].add(f"{i.importer} imports {i.target}")
    assert not wrong, dict(wrong)


def test_every_functions_package_is_in_the_table() -> None:
    packages = {p.name for p in (REPO_ROOT / "functions").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_the_package_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in our_imports("functions"):
        source, target = package_of(i.importer), package_of(i.target)
        if target is not None and source != target:
            graph[source].add(target)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as cycle:
        pytest.fail(f"functions/ packages import each other: {' -> '.join(cycle.args[1])}")


def test_no_module_imports_itself_back_through_others() -> None:
    """Module-level imports between our own modules form no cycle (late ones are checked below)."""
    modules = {module_name(p) for folder in ("functions", "bot") for p in (REPO_ROOT / folder).rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for i in our_imports("functions", "bot"):
        target = i.target if i.target in modules else i.target.rpartition(".")[0]
        if not i.late and target in modules and target != i.importer and not i.importer.startswith(f"{target}."):
            graph[i.importer].add(target)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as cycle:
        pytest.fail(f"an import cycle: {' -> '.join(cycle.args[1])}")


def test_no_late_import_of_our_own_code_but_the_heavy_optional_ones() -> None:
    late = {f"{i.importer} imports {i.target}" for i in our_imports("functions", "bot")
            if i.late and i.target not in LATE_ON_PURPOSE and i.target.rpartition(".")[0] not in LATE_ON_PURPOSE}  # fmt: skip
    assert not late, sorted(late)


def test_the_bot_imports_only_the_shared_contracts_of_functions() -> None:
    wrong = {f"{i.importer} imports {i.target}" for i in our_imports("bot")
             if i.target.startswith("functions.") and not any(i.target.startswith(f"{p}.") for p in BOT_MAY_IMPORT)}  # fmt: skip
    assert not wrong, sorted(wrong)


def test_the_reader_sees_relative_and_late_imports(tmp_path: Path) -> None:
    """A cycle hides behind relative imports and imports inside functions: the reader sees both."""
    module = tmp_path / "planted.py"
    module.write_text("from . import sibling\n\n\ndef later():\n    from ..other.deep import thing\n")
    found = imports_of(module, name="functions.worker.planted")
    assert found == [
        Import("functions.worker.planted", "functions.worker.sibling", late=False),
        Import("functions.worker.planted", "functions.other.deep.thing", late=True),
    ]
