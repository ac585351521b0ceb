"""The structural rules that keep secrets out of failures, checked on iamdb's source.

A new exception raised inside an ``except`` block keeps the caught one as ``__context__`` (even
``raise ... from None`` only hides it), and with it the frames that exception passed through,
whose locals may hold a token, a secret key or a signed request. So iamdb builds its errors
outside the ``except`` that caught the cause: inside one, only a bare ``raise`` (the caught
exception itself, unchanged) is allowed. The failure paths themselves are walked with
tests/integration/kept_alive.py (tests/integration/test_failure_secrets.py and the unit tests
of each module); this test keeps the rule from eroding.
"""

from __future__ import annotations

import ast

from tests.paths import PACKAGE


def raises_inside_except(tree: ast.AST) -> list[int]:
    """Lines of ``raise <something>`` statements that run inside an ``except`` block (not in a
    function defined there)."""
    found: list[int] = []

    def visit(node: ast.AST, in_handler: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            in_handler = False
        if isinstance(node, ast.Raise) and node.exc is not None and in_handler:
            found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, in_handler or isinstance(node, ast.ExceptHandler))

    visit(tree, False)
    return found


def test_no_error_is_raised_inside_an_except_block() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in raises_inside_except(ast.parse(path.read_text(), str(path)))
    ]
    assert offenders == []


def test_the_check_sees_a_raise_inside_an_except() -> None:
    code = "try:\n    pass\nexcept ValueError:\n    raise KeyError('x') from None\n"
    assert raises_inside_except(ast.parse(code)) == [4]
    fine = "try:\n    pass\nexcept ValueError:\n    raise\nraise KeyError('y')\n"
    assert raises_inside_except(ast.parse(fine)) == []
