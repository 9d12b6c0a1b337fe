"""Read prompt files into `PromptRecord`s and hand out deterministic, rank-sharded prompt batches.

Rows follow the TinyZero/verl columns: `prompt` (a question string or a chat message list),
`reward_model.ground_truth` (what the reward compares against) and `data_source` (which reward
judges it). Files may be .parquet, .jsonl, .json (a list of objects) or .csv.

`PromptSampler` gives every rank the same global order (seeded per epoch), so ranks need no
communication to agree on which prompts a step uses; each rank takes whole prompts, so the n
completions of a prompt (its GRPO group) are all generated and scored on one rank. Its (epoch,
offset) cursor is all a checkpoint needs to resume mid-epoch.
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo.errors import UserError
from grpo.templates import load_user_templates, render_prompt
from grpo.types import PromptRecord

SUPPORTED = (".parquet", ".jsonl", ".json", ".csv")
EXPECTED_COLUMNS = (
    "expected TinyZero/verl columns: 'prompt' (string or list of {role, content}), "
    "'reward_model' ({'ground_truth': ..., 'style': 'rule'}), 'data_source' (e.g. 'countdown', 'gsm8k', 'math')"
)


def _unflatten(row: dict[str, Any]) -> dict[str, Any]:
    """CSV has no nesting: a column named 'reward_model.ground_truth' becomes row['reward_model']['ground_truth']."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # 'a' and 'a.b' both given: keep the columns flat
                out[key] = value
                break
        else:
            node[parts[-1]] = value
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of one data file as dicts (values from parquet may still be numpy types)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise UserError(f"data file {path}: unsupported extension '{suffix}'; supported: {', '.join(SUPPORTED)}")
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check the path (relative paths are from the working directory)")
    if suffix == ".parquet":
        import pandas as pd  # deferred: importing pandas costs ~0.5 s

        return pd.read_parquet(path).to_dict("records")
    if suffix == ".csv":
        import pandas as pd

        # Read every cell as the string written, so an answer like "007" or "1/2" is not reinterpreted.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return [_unflatten(r) for r in frame.to_dict("records")]
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"data file {path}, line {line_no} (1-based): invalid JSON ({e}); each line must be one JSON object")
            if not isinstance(row, dict):
                raise UserError(f"data file {path}, line {line_no} (1-based): a JSON {type(row).__name__}, expected an object")
            rows.append(row)
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"data file {path}: invalid JSON ({e}); a .json data file must hold a list of objects")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"data file {path}: a .json data file must hold a list of objects (use .jsonl for one object per line)")
    return rows


def to_python(value: Any) -> Any:
    """numpy scalars/arrays (from parquet) -> plain ints/floats/str/lists/dicts, recursively.

    Rewards compare ground truth with ==, and logs dump it as JSON; numpy types break both.
    """
    if isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or numpy scalar
        return to_python(value.tolist())
    return value


class MalformedRow(Exception):
    """A row that cannot become a prompt: `reason` is short (counted when skipping), `message` says more."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason, self.message = reason, message or reason


def _field(row: dict[str, Any], name: str, path: Path, row_no: int) -> Any:
    """row[name], where a dotted name walks into nested dicts; MalformedRow saying where when missing."""
    node: Any = row
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            raise MalformedRow(
                f"missing field '{name}'",
                f"data file {path}, row {row_no} (0-based): missing field '{name}'. "
                f"The row has fields {sorted(map(str, row))}"
                + (f" and reward_model has {sorted(map(str, row['reward_model']))}" if isinstance(row.get("reward_model"), dict) else "")
                + f"; {EXPECTED_COLUMNS}. Convert the file (e.g. launch/prepare_data.py) to these columns."
            )
        node = node[part]
    return node


@dataclass
class LoadReport:
    """What `load_prompt_records` read and why rows were not kept; truthy when any row was dropped."""

    rows: int = 0  # rows read from all files
    too_long: int = 0  # prompts longer than max_prompt_length tokens
    malformed: Counter = field(default_factory=Counter)  # reason -> rows skipped (only with skip_malformed)

    @property
    def dropped(self) -> int:
        return self.too_long + sum(self.malformed.values())

    def __bool__(self) -> bool:
        return self.dropped > 0

    def describe(self, max_prompt_length: int | None = None) -> str:
        """One log line, e.g. 'dropped 3 of 100 rows: 2 longer than max_prompt_length=512 tokens, 1 malformed (...)'."""
        parts = []
        if self.too_long:
            parts.append(f"{self.too_long} longer than max_prompt_length={max_prompt_length} tokens")
        if self.malformed:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in self.malformed.most_common())
            parts.append(f"{sum(self.malformed.values())} malformed ({reasons})")
        kept = self.rows - self.dropped
        return f"dropped {self.dropped} of {self.rows} rows: {'; '.join(parts) or 'none'}; {kept} remain"


def load_prompt_records(
    files: list[str],
    template: str,
    tokenizer: Any,
    max_prompt_length: int | None,
    templates_file: str | Path | None = None,
    skip_malformed: bool = False,
) -> tuple[list[PromptRecord], LoadReport]:
    """Template, tokenise and collect the prompts of `files` (in order); returns (records, report).

    Prompts longer than `max_prompt_length` tokens are dropped rather than truncated: a cut prompt
    would lose the question or the answer format and only teach noise (None keeps every prompt; the
    evaluator decides itself what to do with long ones). `templates_file` adds the user's templates. A malformed row (a missing
    field, a prompt the template cannot render) is an error naming the field, file and row, unless
    `skip_malformed`, which skips it and counts it in the report by reason. Record indices count
    every row read, skipped ones included, so an index always points at the same source row.
    """
    if isinstance(files, (str, Path)):
        files = [files]
    templates = load_user_templates(templates_file) if templates_file else None
    records: list[PromptRecord] = []
    report = LoadReport()
    for file in files:
        path = Path(file)
        pending = []  # (text, ground_truth, data_source, index), tokenised per file in one batch call
        rows = read_rows(path)
        for row_no, row in enumerate(rows):
            try:
                prompt = _field(row, "prompt", path, row_no)
                ground_truth = _field(row, "reward_model.ground_truth", path, row_no)
                data_source = _field(row, "data_source", path, row_no)
                try:
                    text = render_prompt(template, prompt, tokenizer, templates)
                except UserError as e:
                    raise MalformedRow("prompt the template cannot render",
                                       f"data file {path}, row {row_no} (0-based), field 'prompt': {e}") from None
            except MalformedRow as e:
                if not skip_malformed:
                    raise UserError(f"{e.message} (set data.skip_malformed=true to skip such rows)") from None
                report.malformed[e.reason] += 1
                continue
            pending.append((text, to_python(ground_truth), str(data_source), report.rows + row_no))
        report.rows += len(rows)
        if not pending:
            continue
        ids_per_text = tokenizer([p[0] for p in pending], add_special_tokens=False)["input_ids"]
        for (text, ground_truth, data_source, index), ids in zip(pending, ids_per_text):
            if max_prompt_length is not None and len(ids) > max_prompt_length:
                report.too_long += 1
                continue
            records.append(PromptRecord(text, list(ids), ground_truth, data_source, index))
    if not records:
        raise UserError(_nothing_left(files, report, max_prompt_length))
    return records, report


def _nothing_left(files: list, report: LoadReport, max_prompt_length: int) -> str:
    """The error for an empty result: which filter removed everything, and what to change."""
    where = f"no prompts left from {[str(f) for f in files]}: {report.rows} rows read"
    if report.rows == 0:
        return f"{where}; the files hold no rows"
    malformed = sum(report.malformed.values())
    if malformed == report.rows:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in report.malformed.most_common())
        return f"{where}, every one malformed and skipped by data.skip_malformed ({reasons}); fix the files' columns ({EXPECTED_COLUMNS})"
    length = f"longer than max_prompt_length={max_prompt_length} tokens"
    fix = "raise data.max_prompt_length or check the files"
    if not malformed:
        return f"{where}, all {report.too_long} {length}: the length filter removed everything; {fix}"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in report.malformed.most_common())
    return (f"{where}: {malformed} malformed rows were skipped ({reasons}) and the length filter removed the "
            f"other {report.too_long} ({length}); {fix}")


class PromptSampler:
    """Deterministic prompt batches: one global shuffled order per epoch, each rank takes its slice of a step."""

    def __init__(
        self, records: list[PromptRecord], prompts_per_step: int, rank: int, world_size: int, seed: int, shuffle: bool = True
    ):
        if not records:
            raise UserError("PromptSampler got no prompt records; check the data files")
        if prompts_per_step <= 0 or prompts_per_step % world_size != 0:
            raise UserError(
                f"prompts_per_step={prompts_per_step} must be a positive multiple of world_size={world_size} "
                f"so every rank gets the same number of prompts; change prompts_per_step (e.g. to "
                f"{max(1, round(prompts_per_step / world_size)) * world_size})"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.records = records
        self.prompts_per_step = prompts_per_step
        self.per_rank = prompts_per_step // world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.offset = 0  # position in this epoch's order of the next prompt to hand out
        self._order_epoch = -1
        self._order: list[int] = []

    def _epoch_order(self) -> list[int]:
        # Seeded by (seed + epoch) alone, so every rank and every resumed run computes the same order.
        if self._order_epoch != self.epoch:
            order = list(range(len(self.records)))
            if self.shuffle:
                random.Random(self.seed + self.epoch).shuffle(order)
            self._order, self._order_epoch = order, self.epoch
        return self._order

    def next_batch(self) -> list[PromptRecord]:
        """This rank's prompts for the next step: slice [rank*per_rank, (rank+1)*per_rank) of the global batch."""
        global_batch: list[int] = []
        while len(global_batch) < self.prompts_per_step:
            order = self._epoch_order()
            take = order[self.offset : self.offset + self.prompts_per_step - len(global_batch)]
            global_batch += take
            self.offset += len(take)
            if self.offset >= len(order):  # epoch exhausted: the rest comes from the next, reshuffled one
                self.epoch, self.offset = self.epoch + 1, 0
        mine = global_batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        return [self.records[i] for i in mine]

    def state_dict(self) -> dict[str, int]:
        """The cursor (epoch, offset) plus what the order depends on, so a resume can check it matches."""
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "num_records": len(self.records),
                "shuffle": int(self.shuffle)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue exactly where `state_dict()` was taken; the world size may differ (one global order)."""
        # A different seed, shuffle or record count gives a different order, so the cursor would point at
        # other prompts: resuming must fail loudly rather than silently repeat or skip data.
        # (States saved before these keys existed hold only epoch and offset.)
        mine = {"seed": self.seed, "num_records": len(self.records), "shuffle": int(self.shuffle)}
        for key, value in mine.items():
            if key in state and int(state[key]) != value:
                raise UserError(
                    f"data cursor from the checkpoint has {key}={int(state[key])} but this run has {key}={value}; "
                    "resume with the same data files, data.max_prompt_length, data.shuffle and train.seed"
                )
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if epoch < 0 or not 0 <= offset < len(self.records):
            raise UserError(f"data cursor epoch={epoch}, offset={offset} is outside {len(self.records)} records")
        self.epoch, self.offset = epoch, offset


def check_model_path(path: str, what: str) -> None:
    """Fail early, before anything loads, on a local model folder that is not there (`what` names the setting)."""
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local and not Path(os.path.expanduser(path)).exists():
        raise UserError(f"{what}: no such folder {path!r}. Give a local Hugging Face model folder (a run's "
                        "LOG_DIR/final, or one written by launch/export.py) or a hub id like 'Qwen/Qwen2.5-0.5B'; "
                        "build the demo's base model with: python launch/build_base.py --out .cache/base")


def load_tokenizer(path: str):
    """The model's tokenizer (a local folder or hub id), with padding set to EOS when it has none.

    A path that cannot be loaded is a UserError naming it, for every launcher alike.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {path!r}: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
