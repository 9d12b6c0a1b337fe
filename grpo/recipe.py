"""Reading recipes into the config tree: YAML files merged in order, `section.key=value` overrides, values
checked against each field's type (with the nearest valid key or choice in the error), and each key's doc.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from grpo.config import Config, ConfigError


def load_config(path: str | os.PathLike | list | tuple | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a Config from recipe YAML files (none, one, or several merged in order, later ones
    winning, e.g. a task recipe then an algorithm recipe) and `section.key=value` overrides."""
    cfg = Config()
    paths = [] if path is None else [path] if isinstance(path, (str, os.PathLike)) else list(path)
    for one in paths:
        source = str(one)
        if not Path(one).is_file():
            raise ConfigError(f"recipe file {source} does not exist")
        try:
            with open(one) as f:
                raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} must hold a mapping of sections (model:, data:, ...), got {type(raw).__name__}")
        cfg.source = source if cfg.source == "<defaults>" else f"{cfg.source} + {source}"
        # A run's saved config.yaml is a valid recipe: its record-only entries are recomputed, not read.
        raw.pop("derived", None)
        raw.pop("source", None)
        _merge(cfg, raw, prefix="", source=source)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.max_steps=10")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        _merge(cfg, nested, prefix="", source=f"override {item!r}")
    return cfg


def _merge(node: Any, raw: dict, prefix: str, source: str) -> None:
    valid = {f.name: f for f in dataclasses.fields(node) if f.name not in ("derived", "source")}
    hints = typing.get_type_hints(type(node))
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if not prefix and key in ("derived", "source"):
            raise ConfigError(f"{key} in {source} is not a recipe key: finalize() computes it from the config "
                              "and the world size")
        if key not in valid:
            candidates = [f"{prefix}{name}" for name in valid]
            close = difflib.get_close_matches(dotted, candidates + _all_keys() + list(_ALIASES), n=1, cutoff=0.5)
            close = [_ALIASES.get(c, c) for c in close]
            hint = f"; did you mean {close[0]}?" if close else f"; valid keys here: {', '.join(candidates)}"
            raise ConfigError(f"unknown key {dotted} in {source}{hint}")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted} in {source} is a section; give keys under it, e.g. {dotted}.{dataclasses.fields(current)[0].name}=...")
            _merge(current, value, prefix=dotted + ".", source=source)
        else:
            setattr(node, key, _check_type(value, hints[key], dotted, source))


# Names other trainers use for our keys, so a typo of the long name still finds the short one
# (difflib alone maps train.lerning_rate to train.zero_stage, not to train.lr).
_ALIASES = {"train.learning_rate": "train.lr", "rollout.num_generations": "rollout.n", "rollout.group_size": "rollout.n"}


def _all_keys() -> list[str]:
    """Every dotted key of the tree, nested sections' too (for the nearest-key hint)."""
    def keys(node: Any, prefix: str) -> list[str]:
        out = []
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            out += keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [f"{prefix}{f.name}"]
        return out

    cfg = Config()
    return [key for s in dataclasses.fields(cfg) if s.name not in ("derived", "source")
            for key in keys(getattr(cfg, s.name), f"{s.name}.")]


def _check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    """Return value converted to the field's type, or raise a ConfigError naming the key."""
    origin = typing.get_origin(hint)
    wrong = f"{key} in {source} expects {_type_name(hint)}, got {value!r} ({type(value).__name__})"
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
            hint_text = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key} in {source} must be one of {', '.join(map(repr, choices))}, got {value!r}{hint_text}")
        return value
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and item_hint is str:
            value = [value]  # a single path or stop string given without brackets
        if not isinstance(value, list):
            raise ConfigError(wrong)
        return [_check_type(v, item_hint, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(wrong)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(wrong)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(wrong)
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot in the mantissa) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(wrong) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(wrong)
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(wrong)
        return str(value)
    raise ConfigError(wrong)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def field_docs() -> dict[str, str]:
    """Map each `section.key` (and `section.sub.key` in nested sections such as model.lora) to its one-line doc,
    the string literal under the field."""
    import ast
    import inspect

    import grpo.config

    tree = ast.parse(inspect.getsource(grpo.config))
    by_class = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    docs: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        body = by_class[type(node).__name__].body
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                value = getattr(node, stmt.target.id)
                if dataclasses.is_dataclass(value):
                    walk(value, f"{prefix}{stmt.target.id}.")
                else:
                    docs[f"{prefix}{stmt.target.id}"] = nxt.value.value

    cfg = Config()
    for section in dataclasses.fields(Config):
        if section.name not in ("derived", "source"):
            walk(getattr(cfg, section.name), f"{section.name}.")
    return docs
