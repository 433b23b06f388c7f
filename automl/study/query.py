"""``--where``: a tiny boolean filter over leaderboard columns, parsed, never evaluated as code.

Grammar (Python's expression syntax, parsed by :func:`ast.parse` and walked node by node; only
the nodes below are accepted, so no call, attribute, subscript or import can run)::

    expr     := expr and expr | expr or expr | not expr | (expr) | compare
    compare  := operand (== | != | < | <= | > | >= | in | not in) operand ...
    operand  := COLUMN | `COLUMN/with/slashes` | number | 'string' | NAME | [literal, ...]

A bare ``NAME`` that is not a column is a string when compared for (in)equality with a column
(``adapter==LoRA``); anywhere else it is an unknown column.
"""
from __future__ import annotations

import ast
import operator
import re
from typing import Any

import pandas as pd

from automl.errors import SearchSpaceError

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
_BACKTICK = re.compile(r"`([^`]+)`")


class WhereError(SearchSpaceError):
    """A ``--where`` expression that is malformed or names an unknown column."""


class Where:
    """A parsed filter; :meth:`mask` gives the rows of a DataFrame it keeps."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise WhereError("empty --where expression; e.g. --where 'adapter==LoRA and accuracy>0.9'.")
        self.text = text
        self._quoted: dict[str, str] = {}

        def quote(match: re.Match) -> str:
            name = f"__col{len(self._quoted)}"
            self._quoted[name] = match.group(1)
            return name

        try:
            self.tree = ast.parse(_BACKTICK.sub(quote, text.strip()), mode="eval").body
        except SyntaxError as e:
            raise WhereError(f"--where {text!r} is not an expression ({e.msg}); "
                             f"e.g. 'adapter==LoRA and accuracy>0.9'.") from None

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """A boolean Series over ``frame``'s rows (NaN compares false)."""
        value = self._bool(self.tree, frame)
        if not isinstance(value, pd.Series):
            raise WhereError(f"--where {self.text!r} does not depend on any column; columns: {list(frame.columns)}.")
        return value.fillna(False).astype(bool)

    # -- the walk -------------------------------------------------------------------------------
    def _bool(self, node: ast.AST, frame: pd.DataFrame) -> Any:
        if isinstance(node, ast.BoolOp):
            parts = [self._bool(v, frame) for v in node.values]
            combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            out = parts[0]
            for part in parts[1:]:
                out = combine(out, part)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self._bool(node.operand, frame)
        if isinstance(node, ast.Compare):
            return self._compare(node, frame)
        raise self._refuse(node)

    def _compare(self, node: ast.Compare, frame: pd.DataFrame) -> Any:
        operands = [node.left, *node.comparators]
        out = None
        for op, left, right in zip(node.ops, operands, operands[1:]):
            lhs, rhs = self._operand(left, right, op, frame), self._operand(right, left, op, frame)
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(lhs, pd.Series) or not isinstance(rhs, list):
                    raise WhereError(f"--where {self.text!r}: use COLUMN in [a, b, ...].")
                result = lhs.isin(rhs)
                result = ~result if isinstance(op, ast.NotIn) else result
            elif type(op) in _COMPARE:
                try:
                    result = _COMPARE[type(op)](lhs, rhs)
                except TypeError as e:
                    raise WhereError(f"--where {self.text!r}: cannot compare ({e}).") from None
            else:
                raise self._refuse(node)
            out = result if out is None else out & result
        return out

    def _operand(self, node: ast.AST, other: ast.AST, op: ast.cmpop, frame: pd.DataFrame) -> Any:
        if isinstance(node, ast.Name):
            name = self._quoted.get(node.id, node.id)
            if name in frame.columns:
                return frame[name]
            if isinstance(op, _EQUALITY) and self._is_column(other, frame) and node.id not in self._quoted:
                return name  # adapter==LoRA
            raise WhereError(f"--where {self.text!r}: unknown column {name!r}; columns: {list(frame.columns)} "
                             f"(quote a name with '/' in backticks: `accuracy/<subtask>`).")
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                and isinstance(node.operand.value, (int, float)):
            return -node.operand.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._literal(e, frame) for e in node.elts]
        raise self._refuse(node)

    def _literal(self, node: ast.AST, frame: pd.DataFrame) -> Any:
        if isinstance(node, ast.Name) and node.id not in frame.columns and node.id not in self._quoted:
            return node.id
        value = self._operand(node, node, ast.Eq(), frame)
        if isinstance(value, (pd.Series, list)):
            raise self._refuse(node)
        return value

    def _is_column(self, node: ast.AST, frame: pd.DataFrame) -> bool:
        return isinstance(node, ast.Name) and self._quoted.get(node.id, node.id) in frame.columns

    def _refuse(self, node: ast.AST) -> WhereError:
        return WhereError(f"--where {self.text!r}: {type(node).__name__} is not allowed; use comparisons "
                          f"(== != < <= > >= in) of columns and literals joined by and/or/not.")
