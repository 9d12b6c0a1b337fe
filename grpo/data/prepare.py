"""Prepare a data set for training: source rows or generated tasks -> verl/TinyZero rows -> parquet, plus a summary.

The prepared row is what TinyZero and verl write, so their data and ours are interchangeable:
`data_source` (routes the reward), `prompt` (the question as one user message; the template is
chosen at training time by data.template), `ability`, `reward_model` {style: "rule", ground_truth},
`extra_info` {split, index, ...}. `extra_info.index` is the row's position in the rows read for the
split (TinyZero's convention), so malformed rows leave gaps rather than shifting indices.

`launch/prepare_data.py` is the command line around `prepare`; the pieces are here so tests and
notebooks can call them.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from grpo.data.countdown import make_countdown_rows
from grpo.data.dataset_config import DatasetConfig, SplitSpec
from grpo.data.handlers import HANDLERS, Example, is_broken, load_handler, map_fields
from grpo.data.loader import SUPPORTED, MalformedRow, read_rows, to_python
from grpo.data.multiply import make_multiply_rows
from grpo.errors import UserError
from grpo.templates import CHAT, render_prompt

GENERATORS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "countdown": make_countdown_rows,
    "multiply": make_multiply_rows,
}
PROGRESS_MIN_ROWS = 5000  # show progress bars from this many rows on (smaller inputs finish in a blink)
TOKENIZE_CHUNK = 1000


@dataclass
class PreparedSplit:
    """One output split: the rows kept, how many were read, dropped (reason -> count) and skipped as declared."""

    split: str
    origin: str  # where the rows came from, for messages: a file, a hub id, or a generator
    rows_in: int
    rows: list[dict[str, Any]]
    dropped: Counter = field(default_factory=Counter)
    known_broken: dict[str, list[int]] = field(default_factory=dict)  # "a null answer" -> source rows skipped by known_broken
    declared_by: str = ""  # the dataset config that declared known_broken, for the summary


def is_local(source: str) -> bool:
    """A local file (by extension or existence), as opposed to a hub id like "openai/gsm8k"."""
    return Path(source).suffix.lower() in SUPPORTED or Path(source).exists()


def apply_overrides(cfg: DatasetConfig, *, source: str | None = None, rows: list[int | None] | None = None,
                    split: str | None = None, map_keys: dict[str, str] | None = None, handler: str | None = None,
                    skip_malformed: bool | None = None, count: int | None = None, seed: int | None = None) -> DatasetConfig:
    """The config with command-line choices applied (None leaves a setting as it is)."""
    cfg = dataclasses.replace(cfg, map_keys=dict(cfg.map_keys), splits=dict(cfg.splits))
    if split is not None:
        if split not in cfg.splits:
            raise UserError(f"split '{split}' is not in {cfg.path or cfg.name}; its splits: {', '.join(cfg.splits)}")
        cfg.splits = {split: cfg.splits[split]}
    if source is not None:
        cfg.source = source
        # The config's row ranges describe its own source; another source is taken whole unless --rows says otherwise.
        cfg.splits = {name: dataclasses.replace(spec, rows=None) for name, spec in cfg.splits.items()}
        if is_local(source) and len(cfg.splits) > 1:
            raise UserError(f"--source {source} is one file, so it is one split: pick which with --split "
                            f"({', '.join(cfg.splits)})")
    if rows is not None:
        cfg.splits = {name: dataclasses.replace(spec, rows=list(rows)) for name, spec in cfg.splits.items()}
    if map_keys:
        cfg.map_keys.update(map_keys)
    if handler is not None:
        cfg.handler = handler
    if skip_malformed is not None:
        cfg.skip_malformed = skip_malformed
    if count is not None or seed is not None:
        cfg.splits = {name: dataclasses.replace(spec, count=spec.count if count is None else count,
                                                seed=spec.seed if seed is None else seed)
                      for name, spec in cfg.splits.items()}
    return cfg


def _slice(rows: list[int | None] | None) -> slice:
    return slice(None) if rows is None else slice(rows[0], rows[1])


def read_source(source: str, hub_config: str, spec: SplitSpec) -> tuple[list[dict[str, Any]], str]:
    """The rows of one split of `source` (plain Python values) and a description of where they came from."""
    window = "" if spec.rows is None else f", rows {spec.rows[0]}:{'' if spec.rows[1] is None else spec.rows[1]}"
    if is_local(source):
        if Path(source).is_dir():
            raise UserError(f"source {source} is a folder; give one data file ({', '.join(SUPPORTED)})")
        return [to_python(r) for r in read_rows(source)[_slice(spec.rows)]], f"{source}{window}"
    return _read_hub(source, hub_config, spec), f"hub data set {source} ({hub_config + ', ' if hub_config else ''}split {spec.split}{window})"


def _read_hub(source: str, hub_config: str, spec: SplitSpec) -> list[dict[str, Any]]:
    """`datasets.load_dataset(source, hub_config, split=...)`, sliced to spec.rows: the users' path to hub data."""
    try:
        from datasets import load_dataset  # deferred: a second or two to import, and only hub sources need it
    except ImportError as e:
        raise UserError(f"reading the hub data set {source} needs the `datasets` package ({e}); pip install datasets") from None
    try:
        data = load_dataset(source, hub_config or None, split=spec.split)
    except Exception as e:  # offline, a typo in the id, a missing config: all say the same thing to the user
        raise UserError(
            f"could not load hub data set {source!r} (config {hub_config or 'default'}, split {spec.split}): "
            f"{type(e).__name__}: {str(e)[:300]}. Check the id, or download the data and pass --source FILE "
            f"({', '.join(SUPPORTED)})"
        ) from None
    if spec.rows is not None:
        start, stop = spec.rows[0], len(data) if spec.rows[1] is None else min(spec.rows[1], len(data))
        data = data.select(range(min(start, stop), stop))
    return data.to_list()


def _progress_bar(total: int, desc: str, show: bool) -> Any:
    """A tqdm bar on stderr for large inputs, else None (smaller inputs finish in a blink)."""
    if not show or total < PROGRESS_MIN_ROWS:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=" rows", mininterval=1.0)


def _with_progress(items: list[Any], desc: str, show: bool) -> Any:
    """Iterate `items`, ticking a progress bar when there are many."""
    bar = _progress_bar(len(items), desc, show)
    for item in items:
        yield item
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def _verl_row(example: Example, cfg: DatasetConfig, split: str, index: int) -> dict[str, Any]:
    prompt = [{"role": "user", "content": example.prompt}] if isinstance(example.prompt, str) else example.prompt
    return {
        "data_source": example.data_source or cfg.data_source,
        "prompt": prompt,
        "ability": cfg.ability,
        "reward_model": {"style": "rule", "ground_truth": example.ground_truth},
        "extra_info": {"split": split, "index": index, **example.extra_info},
        **example.columns,
    }


def _run_handler(fn: Callable[[dict[str, Any]], Any], builtin: bool, name: str, row: dict[str, Any]) -> Any:
    """fn(row); a user handler's own exception counts as a malformed row (it could not use the row)."""
    try:
        return fn(row)
    except MalformedRow:
        raise
    except Exception as e:
        if builtin:  # a built-in handler fails only on purpose (MalformedRow): anything else is our bug
            raise
        raise MalformedRow(f"handler raised {type(e).__name__}", f"handler {name} raised {type(e).__name__}: {e}") from e


def _convert(cfg: DatasetConfig, split: str, raw: list[dict[str, Any]], origin: str, progress: bool) -> PreparedSplit:
    """Map keys and run the handler over every row: an Example becomes a verl row; failures raise or are counted."""
    handler = load_handler(cfg.handler)
    builtin = cfg.handler in HANDLERS
    keys = {**{name: name for name in handler.fields}, **cfg.map_keys}
    out = PreparedSplit(split, origin, len(raw), [], declared_by=f"the {cfg.name} config's known_broken ({cfg.path or 'in code'})")
    for index, row in enumerate(_with_progress(raw, f"{cfg.name} {split}", progress)):
        # A defect the config declares for its published source is skipped and counted, before the handler
        # would stop on it; only the declared conditions are, so an unexpected broken row still stops below.
        declared = next((d for d in cfg.known_broken if is_broken(row, keys.get(d.field, d.field), d.condition)), None)
        if declared is not None:
            out.known_broken.setdefault(declared.describe(), []).append(index)
            continue
        try:
            example = _run_handler(handler.fn, builtin, cfg.handler, map_fields(row, keys))
        except MalformedRow as e:
            if not cfg.skip_malformed:
                raise UserError(
                    f"{origin}, row {index} (0-based): {e.message}. Fix the data, or skip such rows with "
                    "--skip-malformed (skip_malformed: true in the dataset config)"
                ) from None
            out.dropped[e.reason] += 1
            continue
        if example is None:
            out.dropped[f"dropped by handler {cfg.handler}"] += 1
            continue
        if not isinstance(example, Example):
            raise UserError(f"handler {cfg.handler} returned a {type(example).__name__} for {origin}, row {index}; "
                            "it must return grpo.data.Example(prompt, ground_truth, ...) or None to drop the row")
        out.rows.append(_verl_row(example, cfg, split, index))
    if not out.rows:
        if not raw:
            raise UserError(f"{origin} holds no rows; check the source, the split and the rows range")
        reasons = ", ".join(f"{reason}: {n}" for reason, n in out.dropped.most_common())
        reasons += "".join(f", {what} (known_broken): {len(rows)}" for what, rows in out.known_broken.items())
        raise UserError(f"no rows left from {origin}: all {len(raw)} were removed by the malformed-row filter "
                        f"(skip_malformed), the handler or known_broken ({reasons.lstrip(', ')}); "
                        "check map_keys against the source's fields")
    return out


def _generate(cfg: DatasetConfig, split: str, spec: SplitSpec) -> PreparedSplit:
    if cfg.generator not in GENERATORS:
        raise UserError(f"unknown generator {cfg.generator!r} in {cfg.path or cfg.name}; known: {', '.join(sorted(GENERATORS))}")
    if spec.count < 1:
        raise UserError(f"splits.{split}.count in {cfg.path or cfg.name} must be at least 1 for generator {cfg.generator}, got {spec.count}")
    try:
        rows = GENERATORS[cfg.generator](count=spec.count, seed=spec.seed, split=split, **cfg.generator_args)
    except TypeError as e:  # an argument the generator does not take
        raise UserError(f"generator_args {cfg.generator_args} do not fit generator {cfg.generator}: {e}") from None
    return PreparedSplit(split, f"generator {cfg.generator} (count {spec.count}, seed {spec.seed})", len(rows), rows)


def prepare(cfg: DatasetConfig, generate: bool = False, progress: bool = True) -> list[PreparedSplit]:
    """Every split of `cfg` as verl rows: read from the source, or made by the generator (no source, or `generate`)."""
    use_generator = bool(cfg.generator) and (generate or not cfg.source)
    if generate and not cfg.generator:
        raise UserError(f"{cfg.path or cfg.name} has no generator; --generate works with {', '.join(sorted(GENERATORS))}")
    if not use_generator and not cfg.data_source:
        raise UserError(f"{cfg.path or cfg.name}: data_source is empty; it routes the reward (e.g. math, gsm8k)")
    prepared = []
    for split, spec in cfg.splits.items():
        if use_generator:
            prepared.append(_generate(cfg, split, spec))
        else:
            raw, origin = read_source(cfg.source, cfg.hub_config, spec)
            prepared.append(_convert(cfg, split, raw, origin, progress))
    return prepared


def prompt_lengths(rows: list[dict[str, Any]], template: str, tokenizer: Any = None,
                   templates: dict[str, str] | None = None, progress: bool = True) -> list[int]:
    """Length of each rendered prompt: tokens with a tokenizer, characters without one."""
    if template == CHAT and tokenizer is None:
        raise UserError("template 'chat' needs a tokenizer to render prompts; pass --tokenizer PATH")
    texts = [render_prompt(template, row["prompt"], tokenizer, templates) for row in rows]
    if tokenizer is None:
        return [len(t) for t in texts]
    lengths: list[int] = []
    bar = _progress_bar(len(texts), "tokenising", progress)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        ids = tokenizer(texts[start : start + TOKENIZE_CHUNK], add_special_tokens=False)["input_ids"]
        lengths.extend(len(x) for x in ids)
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    return lengths


def percentiles(values: list[int], qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, int]:
    """Nearest-rank percentiles and the max: p-th = the smallest value with at least p% of values at or below it."""
    ordered = sorted(values)
    out = {f"p{q}": ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] for q in qs}
    out["max"] = ordered[-1]
    return out


def _row_list(rows: list[int], shown: int = 10) -> str:
    """'row 886', 'rows 886, 1009', or the first `shown` and how many more (0-based source rows)."""
    head = ", ".join(map(str, rows[:shown]))
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"row{'s' if len(rows) != 1 else ''} {head}{more}"


def summary_lines(prepared: PreparedSplit, lengths: list[int], unit: str, template: str,
                  max_prompt_length: int | None = None) -> list[str]:
    """The few lines prepare_data prints per split: counts, drop reasons, length percentiles."""
    kept, dropped = len(prepared.rows), prepared.rows_in - len(prepared.rows)
    lines = [f"{prepared.split}: {prepared.origin}",
             f"  rows in {prepared.rows_in}, kept {kept}, dropped {dropped}"]
    for reason, n in prepared.dropped.most_common():
        lines.append(f"    {n} {reason}")
    for what, rows in prepared.known_broken.items():
        lines.append(f"    skipped {len(rows)} row{'s' if len(rows) != 1 else ''} with {what} ({_row_list(rows)}), "
                     f"declared by {prepared.declared_by}")
    stats = "  ".join(f"{k} {v}" for k, v in percentiles(lengths).items())
    lines.append(f"  prompt length in {unit} with template {template}: {stats}")
    if max_prompt_length is not None and unit.startswith("tokens"):
        over = sum(n > max_prompt_length for n in lengths)
        lines.append(f"  {over} prompts are longer than {max_prompt_length} tokens "
                     f"(data.max_prompt_length={max_prompt_length} drops them when training)")
    return lines
