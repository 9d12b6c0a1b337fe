"""The answer trees parse.py builds: what each node holds, and generic access to sub-trees.

Nodes are plain tuples, cheap to build and compare:
  ("num", Fraction, digits)   digits: significant digits of a decimal literal (6366.2 -> 5), 0 if exact
  ("sym", name)    ("const", "pi" | "e" | "i" | "oo")
  ("add", terms)   ("mul", factors)   ("div", a, b)   ("neg", x)   ("pow", base, exp)   ("pm", x): ±x
  ("fn", name, args)           name in values.py's function tables
  ("list", items)  ("set", items)  ("tuple", open, close, items)  ("union", parts)  ("matrix", rows)
  ("rel", ops, operands, lhs_is_name)   ("ratio", items)   ("based", "204_5")
`children` and `rebuild` let a check walk or rewrite any tree without knowing every kind.
"""
from __future__ import annotations


def children(node: tuple) -> tuple:
    """The sub-trees of a node, whatever its kind."""
    kind = node[0]
    if kind in ("neg", "pm"):
        return (node[1],)
    if kind in ("add", "mul", "list", "set", "union", "ratio"):
        return node[1]
    if kind in ("div", "pow"):
        return (node[1], node[2])
    if kind == "fn":
        return node[2]
    if kind == "tuple":
        return node[3]
    if kind == "matrix":
        return tuple(cell for row in node[1] for cell in row)
    if kind == "rel":
        return node[2]
    return ()


def rebuild(node: tuple, kids: tuple) -> tuple:
    """`node` with its sub-trees replaced by `kids` (in the order children() gives them)."""
    kind = node[0]
    if kind in ("neg", "pm"):
        return (kind, kids[0])
    if kind in ("add", "mul", "list", "set", "union", "ratio"):
        return (kind, tuple(kids))
    if kind in ("div", "pow"):
        return (kind, kids[0], kids[1])
    if kind == "fn":
        return ("fn", node[1], tuple(kids))
    if kind == "tuple":
        return ("tuple", node[1], node[2], tuple(kids))
    if kind == "matrix":
        width = len(node[1][0])
        return ("matrix", tuple(tuple(kids[r * width:(r + 1) * width]) for r in range(len(node[1]))))
    if kind == "rel":
        return ("rel", node[1], tuple(kids), node[3])
    return node
