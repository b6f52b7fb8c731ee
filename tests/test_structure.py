"""The shape the code keeps: small files, short functions, and data flowing transport -> engine -> backend."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 60


def python_files() -> list[Path]:
    """The tracked (and new, not ignored) Python files that people write: not the generated stubs."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in listed if "_pb2" not in name and (ROOT / name).is_file()]


def test_no_file_or_function_is_too_long() -> None:
    too_long: list[str] = []
    for path in python_files():
        source = path.read_text()
        name = path.relative_to(ROOT)
        if source.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_data_flows_one_way() -> None:
    for service in ("captioner", "animator"):
        servicer = imported_modules(ROOT / service / "service.py")
        assert f"{service}.backend" not in servicer, f"{service}/service.py reaches into the backend"
        for module in (ROOT / service).glob("*.py"):
            imports = imported_modules(module)
            if module.name not in ("service.py", "app.py"):
                assert not any(".v1" in name or name.startswith("grpc") for name in imports), (
                    f"{module.name} imports grpc or protobuf stubs: only the servicer and the App may")
            if module.name != "tiny.py":
                assert f"{service}.tiny" not in imports or module.name == "app.py", (
                    f"{module.name} imports the test-model builder")


def test_only_the_caption_families_name_a_model_class() -> None:
    """Engines, batcher, servicer and App run any family through the backend protocol: none imports transformers or
    a family's module, or names a family's class. Families never import the test-model builders."""
    from captioner.families import families

    classes = {family.__name__ for family in families().values()}
    for name in ("engine.py", "batcher.py", "service.py", "app.py", "backend.py", "limits.py", "settings.py"):
        module = ROOT / "captioner" / name
        reached = [m for m in imported_modules(module)
                   if m == "transformers" or m.startswith(("transformers.", "captioner.families."))]
        assert not reached, f"captioner/{name} reaches into a model library or a family: {reached}"
        assert not any(cls in module.read_text() for cls in classes), f"captioner/{name} names a family class"
    for module in (ROOT / "captioner" / "families").glob("*.py"):
        assert not any(m.startswith("captioner.tiny") for m in imported_modules(module)), module.name
