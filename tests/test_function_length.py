"""House rule: no function in engine/ or tui/ longer than ~60 lines unless its docstring says why.

A long function is where a newcomer gets lost (issue 14: `generate` at ~130 lines, `tk_decode_step`
at ~160); the style is functions that read as a list of named stages. The length counted is what a
reader scrolls through: from the `def` line to the function's last line (decorators not counted,
signature and docstring counted). A function may stay longer when its docstring gives the reason
with the words "long because" (for a typer command, after a `\\f` so the reason stays out of --help).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("engine", "tui")
MAX_LINES = 60
REASON = "long because"


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of each function above max_lines without a stated reason."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > max_lines and REASON not in (ast.get_docstring(child) or "").lower():
                        found.append((name, child.lineno, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_check_finds_a_long_function_and_accepts_a_reason():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))  # def line + 60 lines: one too many
    plain = f"def f():\n{body}\n\nclass C:\n    def m(self):\n{body.replace('    ', '        ')}"
    assert long_functions(plain) == [("f", 1, MAX_LINES + 1), ("C.m", MAX_LINES + 5, MAX_LINES + 1)]
    reasoned = f'def f():\n    """Does x.\n\n    Long because it is a table."""\n{body}'
    assert long_functions(reasoned) == []
    assert long_functions(f"def f():\n{body[: -len(body.splitlines(True)[-1])]}") == []  # exactly 60: fine


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_long_function_without_a_reason(folder):
    offenders = [
        f"{path.relative_to(REPO)}:{line} {name} ({length} lines)"
        for path in sorted((REPO / folder).rglob("*.py"))
        for name, line, length in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, (
        f"functions over {MAX_LINES} lines: split them into named stages, or say why in the docstring "
        f"('{REASON} ...'): " + "; ".join(offenders)
    )
