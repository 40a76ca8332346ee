"""The package's shape, checked: folders are layers and imports only go down them, no module
reaches into another's `_private` names, and files and functions stay short (style.md)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "videogen"
# Lower layers never import higher ones (design §2); a module may import its own layer.
# `videogen.model` is the old name of models.dit, kept for pipelines saved before the layout.
LAYERS = {"errors": 0, "utils": 0, "data": 1, "models": 2, "diffusion": 3, "evaluation": 4, "pipelines": 5,
          "training": 6, "model": 2, "web": 7, "cli": 8, "__main__": 9, "__init__": 9}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
SOURCES = sorted(PACKAGE.rglob("*.py"))


def layer(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "videogen", module
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts)


def imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("videogen"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("videogen"):
                    yield node.lineno, alias.name, []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers_and_take_no_private_name(path):
    tree = ast.parse(path.read_text())
    me = module_name(path)
    mine = layer(me) if me != "videogen.__init__" else 9
    for line, module, names in imports(tree):
        target = layer(module) if module != "videogen" else 9
        assert target <= mine, f"{me}:{line} imports {module}, a higher layer"
        private = [n for n in names if n.startswith("_") and module != me]
        assert not private, f"{me}:{line} imports private {private} from {module}"


def test_files_and_functions_are_short():
    long_files, long_functions = [], []
    for path in SOURCES:
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(str(path.relative_to(PACKAGE)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length})")
    assert not long_files, long_files
    assert not long_functions, long_functions
