"""The package's layout rules, checked on the source (no imports run): the floors written in
``HeadNeRF/__init__.py`` hold, nothing imports ``training``, no function is over 80 lines and no
module imports another module's private name."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "HeadNeRF"

# The floors of HeadNeRF/__init__.py: a unit may import only units on lower floors.
FLOORS = {
    0: {"config", "geometry", "metrics", "shapes", "run_lock", "memory", "cli_checks"},
    1: {"atomic_io", "rendering", "loop", "losses"},
    2: {"checkpoint", "image_io", "data", "fields", "neural_renderer"},
    3: {"face", "run_dir", "models"},
    4: {"preprocess", "eyewarp", "estimator"},
    5: {"fitting"},
    6: {"evaluation"},
    7: {"training"},
}
FLOOR_OF = {unit: floor for floor, units in FLOORS.items() for unit in units}


def _unit(path: pathlib.Path) -> str:
    """HeadNeRF/<unit>.py or HeadNeRF/<unit>/... -> <unit> (the floors' granularity)."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported_units(path: pathlib.Path, tree: ast.AST):
    """(unit, line) of every package import in the file, top-level or inside functions."""
    package_parts = path.relative_to(PACKAGE).parent.parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[:len(package_parts) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if target else [[a.name] for a in node.names]
            elif (node.module or "").split(".")[0] == "HeadNeRF":
                target = node.module.split(".")[1:]
                names = [target] if target else [[a.name] for a in node.names]
            else:
                continue
            for t in names:
                yield t[0], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "HeadNeRF" and len(parts) > 1:
                    yield parts[1], node.lineno


def _sources():
    return [(p, ast.parse(p.read_text(), filename=str(p))) for p in sorted(PACKAGE.rglob("*.py"))
            if p.name != "__init__.py" or p.parent != PACKAGE]


def test_every_unit_has_a_floor():
    units = {_unit(p) for p, _ in _sources()}
    assert units - set(FLOOR_OF) == set(), "add the new module to HeadNeRF/__init__.py's floors and to FLOORS here"


def _upward(path: pathlib.Path, tree: ast.AST) -> list[str]:
    unit = _unit(path)
    return [f"{path.relative_to(ROOT)}:{line}: {unit} (floor {FLOOR_OF[unit]}) imports {target} (floor {FLOOR_OF[target]})"
            for target, line in _imported_units(path, tree)
            if target != unit and target in FLOOR_OF and FLOOR_OF[target] >= FLOOR_OF[unit]]


def test_imports_only_go_down():
    assert [line for path, tree in _sources() for line in _upward(path, tree)] == []


def test_nothing_but_the_training_script_imports_training():
    importers = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(part in {".venv", "tests", ".git"} for part in path.relative_to(ROOT).parts):
            continue
        if path.name in {"train_headnerf.py", "training.py"}:
            continue
        text = path.read_text()
        if "HeadNeRF.training" in text or "from .training" in text or "from ..training" in text:
            importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p, tree in _sources() for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert long == []


def test_no_private_name_imports():
    private = [f"{p.relative_to(ROOT)}:{n.lineno} {a.name}" for p, tree in _sources() for n in ast.walk(tree)
               if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("HeadNeRF"))
               for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []


@pytest.mark.parametrize("module,source,upward", [
    ("rendering/x.py", "from ..models import build_model", True),
    ("rendering/x.py", "def f():\n    from HeadNeRF.training import train", True),
    ("models.py", "from .rendering.rays import generate_rays", False),
    ("evaluation/x.py", "from . import readout", False),
])
def test_the_floor_check_sees_an_upward_import(module, source, upward):
    """The check is not vacuous: an upward import, top-level or inside a function, is reported."""
    assert bool(_upward(PACKAGE / module, ast.parse(source))) == upward
