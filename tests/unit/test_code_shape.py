"""No import cycle among the package's modules (imports under ``if TYPE_CHECKING:`` are for type hints only and not
counted); the length of functions is test_code_rules.py's."""
import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "captioning"


def _modules() -> Dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


def _runtime_imports(tree: ast.Module, modules: Set[str]) -> Set[str]:
    """Package modules imported by ``tree`` (at any depth, lazily too), leaving out ``if TYPE_CHECKING:`` blocks."""
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    return found & modules


def test_no_import_cycle_among_the_modules():
    modules = _modules()
    graph = {name: _runtime_imports(tree, set(modules)) - {name} for name, tree in modules.items()}
    state: Dict[str, int] = {}          # 1: on the current path, 2: done

    def walk(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: %s" % " -> ".join(path[path.index(nxt):] + [node, nxt]) \
                if nxt in path else "import cycle through %s and %s" % (node, nxt)
            if nxt not in state:
                walk(nxt, path + [node])
        state[node] = 2
    for name in sorted(graph):
        if name not in state:
            walk(name, [])
