"""Every reason has one home: lft_api.conditions.Reason.

A reason is what a user reads in `kubectl describe` (conditions, Events) and in status.attemptHistory: the operator's
own and the trainer's (the termination message's). The check reads the shipped sources (AST) and fails on
- a CamelCase string literal given as a reason (reasons are CamelCase, messages are not): a `reason=` or `*_reason=`
  keyword, or a positional argument bound to a parameter named `reason` or `*_reason` of a function or class of the
  shipped packages (by name: `d.event(type, reason, message)`, `InvalidInput(reason, message)`);
- a literal compared with a `.reason` that Reason does not declare (Kubernetes' own `Unschedulable`, which the
  operator passes on as its own, is declared);
- a `Reason.X` that Reason does not declare;
- a name or a value declared twice in Reason.
Reasons another component writes (Kubernetes' FailedCreate, PodFailurePolicy, an API error's reason) are read and
compared as named constants or variables, never passed as literals.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("api", "operator", "trainer_image", "cli")
CONDITIONS = REPO / "api" / "lft_api" / "conditions.py"
CAMEL_CASE = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*")


def _reason_class() -> list[tuple[str, str]]:
    """(name, value) of each `NAME = "Value"` in the body of class Reason."""
    tree = ast.parse(CONDITIONS.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Reason")
    return [(stmt.targets[0].id, stmt.value.value) for stmt in cls.body
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)]


def _sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(REPO)): ast.parse(p.read_text()) for root in SHIPPED
            for p in sorted((REPO / root).rglob("*.py"))}


def _is_reason_name(name: str | None) -> bool:
    return bool(name) and (name == "reason" or name.endswith("_reason"))


def _reason_parameters(trees: dict[str, ast.Module]) -> dict[str, set[int]]:
    """{function or class name: positions of its parameters named reason/*_reason} over the shipped code
    (methods and __init__ without self)."""
    found: dict[str, set[int]] = {}

    def record(name: str, args: ast.arguments, drop_first: bool) -> None:
        params = [a.arg for a in args.posonlyargs + args.args][1 if drop_first else 0:]
        positions = {i for i, p in enumerate(params) if _is_reason_name(p)}
        if positions:
            found.setdefault(name, set()).update(positions)

    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        record(node.name if item.name == "__init__" else item.name, item.args, drop_first=True)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                record(node.name, node.args, drop_first=False)  # a method is recorded above, with self dropped
    return found


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _is_reason_expr(node: ast.AST) -> bool:
    """x.reason, reason, x["reason"], x.get("reason")."""
    if isinstance(node, ast.Attribute):
        return _is_reason_name(node.attr)
    if isinstance(node, ast.Name):
        return _is_reason_name(node.id)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value == "reason"
    if isinstance(node, ast.Call) and _callee(node) == "get" and node.args and isinstance(node.args[0], ast.Constant):
        return node.args[0].value == "reason"
    return False


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _camel_literal(node: ast.AST) -> str | None:
    value = _literal(node)
    return value if value is not None and CAMEL_CASE.fullmatch(value) else None


def reason_problems(trees: dict[str, ast.Module], declared: dict[str, str]) -> list[str]:
    """declared: {name: value} of Reason."""
    params = _reason_parameters(trees)
    problems = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Reason":
                if node.attr not in declared:
                    problems.append(f"{where}: Reason.{node.attr} is not declared in lft_api.conditions.Reason")
            elif isinstance(node, ast.Call):
                literals = [(kw.arg, _camel_literal(kw.value)) for kw in node.keywords if _is_reason_name(kw.arg)]
                for pos in params.get(_callee(node) or "", ()):
                    if pos < len(node.args):
                        literals.append((f"argument {pos}", _camel_literal(node.args[pos])))
                for arg, value in literals:
                    if value is not None:
                        problems.append(f"{where}: literal reason {value!r} ({_callee(node)}, {arg}): use Reason.X")
            elif isinstance(node, ast.Compare) and len(node.ops) == 1:
                sides = [node.left, node.comparators[0]]
                if any(_is_reason_expr(s) for s in sides):
                    for side in sides:
                        value = _literal(side)
                        if value is not None and value not in declared.values():
                            problems.append(f"{where}: a reason compared with {value!r}, which Reason does not declare")
    return problems


def test_reason_declares_each_name_and_value_once() -> None:
    pairs = _reason_class()
    names = [n for n, _ in pairs]
    values = [v for _, v in pairs]
    assert len(pairs) > 50
    assert sorted({n for n in names if names.count(n) > 1}) == []
    assert sorted({v for v in values if values.count(v) > 1}) == []


def test_every_reason_used_is_declared_in_lft_api() -> None:
    assert reason_problems(_sources(), dict(_reason_class())) == []


def test_the_check_catches_a_new_literal_reason() -> None:
    planted = {
        "keyword.py": 'TerminationMessage(outcome="error", reason="NewReason")',
        "positional.py": 'raise InvalidInput("NewReason", "bad")',
        "event.py": 'd.event("Warning", "NewReason", "message")',
        "final.py": 'd.final(FAILED, Reason.ERROR, "m", event_reason="NewReason")',
        "compare.py": 'if msg.reason == "NewReason": pass',
        "undeclared.py": "reason = Reason.NEW_REASON",
    }
    trees = {**_sources(), **{name: ast.parse(code) for name, code in planted.items()}}
    problems = reason_problems(trees, dict(_reason_class()))
    assert set(planted) <= {p.split(":")[0] for p in problems}
