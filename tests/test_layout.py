"""The layout holds: each process's code stays in its room, `shared/` holds only what at least two
of them use, the product imports no test or bench code, and the Procfile is the one rendered from
cli/processes.py (which `summaries up`, the tests and the bench also build their commands from)."""

from __future__ import annotations

import ast
from pathlib import Path

from cli.processes import procfile

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("api", "worker", "cli", "console")
PRODUCT = (*SIDES, "shared")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PRODUCT for path in (ROOT / package).rglob("*.py")
            if "migrations" not in path.parts}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The product modules a file imports, wherever in the file (imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in known}
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in ("tests", "bench")}
    return found


def graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imports_of(path, set(modules)) for name, path in modules.items()}


def test_api_worker_cli_and_console_never_import_each_other_nor_tests_or_bench():
    for module, imported in graph().items():
        side = module.split(".")[0]
        foreign = {name for name in imported if name.split(".")[0] not in (side, "shared")}
        assert not foreign, f"{module} imports {sorted(foreign)}"


def test_every_shared_module_is_used_by_at_least_two_of_api_worker_cli_and_console():
    imports = graph()
    users: dict[str, set[str]] = {name: set() for name in imports if name.startswith("shared.")}
    for side in SIDES:
        # Everything of shared/ that the side's code reaches, directly or through other shared modules.
        seen, todo = set(), [name for name in imports if name.split(".")[0] == side]
        while todo:
            for name in imports[todo.pop()]:
                if name.startswith("shared.") and name not in seen:
                    seen.add(name)
                    todo.append(name)
        for name in seen:
            users[name].add(side)
    lonely = {name: sorted(sides) for name, sides in users.items()
              if len(sides) < 2 and not name.endswith("__init__") and name.count(".") and
              not (ROOT / name.replace(".", "/")).is_dir()}
    assert not lonely, f"used by one side only; move each to its user: {lonely}"


# Tables with a lifecycle, their ORM class, and their one writer (STYLE rule 12); migrations aside.
OWNERS = {"feedback_summaries": ("FeedbackSummary", "shared/summaries/lifecycle.py"),
          "callback_deliveries": ("CallbackDelivery", "shared/callbacks/deliveries.py"),
          "console_users": ("ConsoleUser", "shared/operator/users.py")}


def test_every_table_with_a_lifecycle_is_written_by_its_owner_only():
    import re

    for table, (model, owner) in OWNERS.items():
        writes = re.compile(rf"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+{table}\b|\b(insert|update|delete)\(\s*{model}\b"
                            rf"|session\.(add|delete)\(\s*{model}\(", re.I)
        writers = {str(path.relative_to(ROOT)) for package in PRODUCT for path in (ROOT / package).rglob("*.py")
                   if "migrations" not in path.parts and writes.search(path.read_text())}
        assert writers == {owner}, f"{table} is written by {sorted(writers)}; only {owner} may"


def test_the_procfile_is_the_one_cli_processes_defines():
    assert (ROOT / "Procfile").read_text() == procfile(), "regenerate: python -c 'from cli.processes import " \
                                                          "procfile; print(procfile(), end=\"\")' > Procfile"
