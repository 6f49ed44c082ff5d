"""Rules of the code base, checked on the source: no function in the package longer than 60 lines (the argparse
groups of arguments.py excepted: one statement per option), and no behaviour chosen by comparing a type string
(``self.type == ...``): one class per type instead."""
import ast
from pathlib import Path
from typing import List


PACKAGE = Path(__file__).resolve().parents[2] / "captioning"
MAX_LINES = 60
EXEMPT = {"arguments.py"}


def _sources() -> List[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent)) if PACKAGE in path.parents else path.name


def long_functions(paths: List[Path], max_lines: int = MAX_LINES) -> List[str]:
    """``file:function: N lines`` for every function (methods and nested ones too) longer than ``max_lines``."""
    found = []
    for path in paths:
        if path.name in EXEMPT and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append("%s:%s: %d lines" % (_name(path), node.name, lines))
    return found


def type_string_switches(paths: List[Path]) -> List[str]:
    """``file:line`` of every ``self.type ==``."""
    return ["%s:%d" % (_name(path), number) for path in paths
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "self.type ==" in line]


def test_no_function_is_longer_than_60_lines():
    found = long_functions(_sources())
    assert not found, "functions over %d lines: %s" % (MAX_LINES, ", ".join(found))


def test_no_class_switches_on_a_type_string():
    found = type_string_switches(_sources())
    assert not found, "self.type == at %s: one class per type" % ", ".join(found)


def test_the_rules_find_what_they_look_for(tmp_path):
    """The checks are not vacuous: they find a long function (a nested one too), not one of 60 lines, and a type
    switch."""
    source = tmp_path / "mod.py"
    body = "".join("    x = %d\n" % i for i in range(59))
    nested = "".join("    " + line + "\n" for line in body.splitlines())
    source.write_text("def short():\n%s\n\ndef outer():\n    def inner():\n%s        return 1\n    return inner\n"
                      "\n\nclass A:\n    def f(self):\n        return self.type == 'mlp'\n" % (body, nested))
    assert [f.split(":")[1] for f in long_functions([source])] == ["outer", "inner"]
    line = source.read_text().splitlines().index("        return self.type == 'mlp'") + 1
    assert type_string_switches([source]) == ["mod.py:%d" % line]
