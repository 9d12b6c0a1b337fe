"""A dataset config (recipes/datasets/*.yaml): where a data set comes from and how its rows become prompts.

Two kinds, by which key is set:
- `source`: a hub id (loaded with `datasets.load_dataset`) or a local file (jsonl/json/parquet/csv);
  `map_keys` names the source's fields for ours and `handler` turns each row into an Example;
- `generator`: a seeded task generator (countdown, multiply) with `generator_args`.
A config may set both (countdown: TinyZero's hub data, or `--generate` for the offline generator).
`splits` maps each output split (train.parquet, test.parquet) to where its rows come from:
{split: source split, rows: [start, stop)} for a source, {count, seed} for a generator.
`map_keys` maps our field to the source's, or to a list of names tried in order (the first one the row
has), so one config reads the same data published with different field names.
`known_broken` declares the defects a published source is known to carry, by condition
({field: answer, is: null, why: "..."}): rows that meet one are skipped and counted per declaration,
and prepare_data prints them; any other unusable row is still an error (or skip_malformed's business).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grpo.errors import UserError


@dataclass
class SplitSpec:
    split: str = "train"  # the source's split to read (hub data sets; a local file is one split)
    rows: list[int | None] | None = None  # [start, stop) slice of that split, e.g. TinyZero's test = [327680, 328704]
    count: int = 0  # generator: rows to make
    seed: int = 0  # generator: seed of those rows


BROKEN_CONDITIONS = ("null", "empty")  # known_broken's `is`: the field holds null / only whitespace or nothing


@dataclass
class KnownBroken:
    """Rows of a published source known to be unusable, by condition: skipped and counted, never silently."""

    field: str  # our field name (prompt, answer, ...), read through map_keys like the handler reads it
    condition: str  # "null" (the field holds null) or "empty" (a string of only whitespace, or an empty list)
    why: str = ""  # where the defect is known from, e.g. "DeepScaleR's train/math.json: rows 886 and 1009"

    def describe(self) -> str:
        """'a null answer', 'an empty answer': how the summary names the rows this skips."""
        return f"{'a' if self.condition == 'null' else 'an'} {self.condition} {self.field}"


@dataclass
class DatasetConfig:
    name: str = ""  # defaults to the file name without .yaml
    source: str = ""  # hub id or local file; --source replaces it
    hub_config: str = ""  # the hub data set's config name (gsm8k: "main")
    map_keys: dict[str, str | list[str]] = field(default_factory=dict)  # our field -> source field (or names tried in order)
    handler: str = "math"  # built-in row handler (math, gsm8k, countdown, gpqa) or package.module:function
    data_source: str = ""  # written to every row: routes the reward (math, gsm8k, countdown, multiply, gpqa)
    ability: str = "math"  # verl's ability column (informational)
    template: str = "qwen_r1"  # the template to train with (data.template); used here for prompt lengths
    skip_malformed: bool = False  # skip rows that cannot become prompts (counted) instead of failing
    known_broken: list[KnownBroken] = field(default_factory=list)  # defects the published source is known to have: skipped, counted, printed
    generator: str = ""  # countdown or multiply
    generator_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the generator
    splits: dict[str, SplitSpec] = field(default_factory=lambda: {"train": SplitSpec()})
    out: str = ""  # default output folder (--out replaces it); "" means data/<name>
    path: str = ""  # the YAML file this came from (set by the loader, for messages)


def _nearest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(valid)}"


def _check(value: Any, kind: type | tuple, key: str, path: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"dataset config {path}: {key} expects {names}, got {value!r}")
    return value


def _split_spec(name: str, raw: Any, path: str) -> SplitSpec:
    if raw is None:
        raw = {}
    _check(raw, dict, f"splits.{name}", path)
    valid = [f.name for f in dataclasses.fields(SplitSpec)]
    for key in raw:
        if key not in valid:
            raise UserError(f"dataset config {path}: unknown key splits.{name}.{key}; {_nearest(key, valid)}")
    spec = SplitSpec(**raw)
    _check(spec.split, str, f"splits.{name}.split", path)
    _check(spec.count, int, f"splits.{name}.count", path)
    _check(spec.seed, int, f"splits.{name}.seed", path)
    if spec.rows is not None:
        if (not isinstance(spec.rows, list) or len(spec.rows) != 2
                or not all(r is None or (isinstance(r, int) and r >= 0) for r in spec.rows)):
            raise UserError(f"dataset config {path}: splits.{name}.rows must be [start, stop] (non-negative, "
                            f"stop may be null), got {spec.rows!r}")
    return spec


def _known_broken(index: int, raw: Any, path: str) -> KnownBroken:
    key = f"known_broken[{index}]"
    _check(raw, dict, key, path)
    valid = ["field", "is", "why"]
    for name in raw:
        if name not in valid:
            raise UserError(f"dataset config {path}: unknown key {key}.{name}; {_nearest(str(name), valid)}")
    if "field" not in raw or "is" not in raw:
        raise UserError(f"dataset config {path}: {key} needs field and is, e.g. {{field: answer, is: null, why: ...}}")
    # YAML reads a bare `null` as None: that is the condition "null", not a missing value.
    condition = "null" if raw["is"] is None else raw["is"]
    if condition not in BROKEN_CONDITIONS:
        raise UserError(f"dataset config {path}: {key}.is must be one of {', '.join(BROKEN_CONDITIONS)}, got {raw['is']!r}")
    entry = KnownBroken(_check(raw["field"], str, f"{key}.field", path), condition, raw.get("why", ""))
    _check(entry.why, str, f"{key}.why", path)
    return entry


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Read and check a dataset YAML; unknown keys and wrong types are UserErrors naming the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset config {path} does not exist (shipped ones: recipes/datasets/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"dataset config {path} is not valid YAML: {e}") from None
    _check(raw, dict, "the top level", str(path))
    valid = [f.name for f in dataclasses.fields(DatasetConfig) if f.name != "path"]
    for key in raw:
        if key not in valid:
            raise UserError(f"dataset config {path}: unknown key {key}; {_nearest(str(key), valid)}")
    splits = raw.pop("splits", {"train": {}})
    known_broken = _check(raw.pop("known_broken", None) or [], list, "known_broken", str(path))
    cfg = DatasetConfig(**raw, path=str(path))
    cfg.known_broken = [_known_broken(i, entry, str(path)) for i, entry in enumerate(known_broken)]
    p = str(path)
    cfg.name = cfg.name or path.stem
    for key in ("name", "source", "hub_config", "handler", "data_source", "ability", "template", "generator", "out"):
        _check(getattr(cfg, key), str, key, p)
    _check(cfg.skip_malformed, bool, "skip_malformed", p)
    _check(cfg.generator_args, dict, "generator_args", p)
    _check(cfg.map_keys, dict, "map_keys", p)
    for ours, theirs in cfg.map_keys.items():
        _check(theirs, (str, list), f"map_keys.{ours}", p)
        if isinstance(theirs, list) and (not theirs or not all(isinstance(name, str) for name in theirs)):
            raise UserError(f"dataset config {path}: map_keys.{ours} must be a field name or a non-empty list of "
                            f"names tried in order, got {theirs!r}")
    _check(splits, dict, "splits", p)
    if not splits:
        raise UserError(f"dataset config {path}: splits is empty; name at least one, e.g. splits: {{train: {{split: train}}}}")
    cfg.splits = {str(name): _split_spec(str(name), spec, p) for name, spec in splits.items()}
    if not cfg.source and not cfg.generator:
        raise UserError(f"dataset config {path}: set source (a hub id or a file) or generator (countdown, multiply)")
    return cfg
