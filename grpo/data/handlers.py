"""Row handlers: turn one source row (a dict from a file or a hub data set) into one `Example`.

Before a handler runs, `map_fields` copies the source's field names onto ours, as MindSpeed-RL's
`--map-keys` does: `{"prompt": "problem", "answer": "answer"}` sets row["prompt"] = row["problem"].
Built-in handlers, by name (`HANDLERS`):
- `math`: question in `prompt`, final answer in `answer` (DeepScaleR, MATH-500, AIME), or a list of
  acceptable alternatives (Minerva, OlympiadBench: kept as a list, any may match); a `solution`
  field, when present, is kept in extra_info;
- `gsm8k`: `answer` is GSM8K's worked solution ending in "#### N": the ground truth is N without
  commas, the whole solution goes to extra_info;
- `countdown`: `target` and `nums` (Jiayi-Pan/Countdown-Tasks-3to4, TinyZero parquet) become
  TinyZero's whole base prompt;
- `gpqa`: GPQA's question, correct answer and three incorrect ones become the multiple-choice
  prompt GPQA evaluations use (simple-evals' wording), the four answers shuffled into A-D by a
  seed drawn from the question text (the same row always gets the same order, wherever it is
  prepared); the ground truth is {"answer": gold letter, "options": texts in A-D order}.
A user handler is "package.module:function", called as fn(row) -> Example | None (None drops the row);
it may raise `MalformedRow` (or anything else) for a row it cannot use, which is then an error or,
with skip_malformed, a counted skip.
"""
from __future__ import annotations

import importlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from grpo.data.countdown import countdown_prompt
from grpo.data.loader import MalformedRow, to_python
from grpo.errors import UserError


@dataclass
class Example:
    """What a handler makes of one row; `prepare` adds data_source, ability, style, index and split."""

    prompt: str | list[dict[str, str]]  # the question (stored as one user message) or a whole message list
    ground_truth: Any  # reward_model.ground_truth: a string for math-like tasks, a dict for countdown
    extra_info: dict[str, Any] = field(default_factory=dict)  # kept for logs and evaluation, not used by training
    columns: dict[str, Any] = field(default_factory=dict)  # extra top-level columns (TinyZero's target, nums)
    data_source: str | None = None  # overrides the dataset config's data_source for this row


_ABSENT = object()  # a field that is not there at all, as opposed to one holding null


@dataclass
class Handler:
    fn: Callable[[dict[str, Any]], Example | None]
    fields: tuple[str, ...]  # our field names the handler reads; map_keys defaults each to itself


def source_field(row: dict[str, Any], theirs: str | list[str]) -> tuple[str, Any]:
    """(name, value) of the source field `theirs` names: the first of a list the row has; _ABSENT if none.

    A dotted name walks into dicts ("reward_model.ground_truth")."""
    names = [theirs] if isinstance(theirs, str) else theirs
    for name in names:
        node: Any = row
        for part in name.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            return name, node
    return " or ".join(names), _ABSENT


def map_fields(row: dict[str, Any], map_keys: dict[str, str | list[str]]) -> dict[str, Any]:
    """The row with each of our names set from the source field map_keys gives it (module docstring)."""
    out = dict(row)
    for ours, theirs in map_keys.items():
        name, node = source_field(row, theirs)
        if node is None:
            raise MalformedRow(f"null field '{name}'", f"field '{name}' is null")
        if node is _ABSENT:
            mapping = f" (map_keys: {ours} <- {name})" if name != ours else ""
            raise MalformedRow(
                f"missing field '{name}'",
                f"missing field '{name}'{mapping}; the row has fields {sorted(map(str, row))}. "
                f"Point our field at the source's name with --map-keys '{{\"{ours}\": \"SOURCE_FIELD\"}}'",
            )
        out[ours] = node
    return out


def is_broken(row: dict[str, Any], theirs: str | list[str], condition: str) -> bool:
    """Does the source field meet a known_broken condition: "null" (holds null), "empty" (blank text, empty list)?"""
    _, value = source_field(row, theirs)
    if condition == "null":
        return value is None
    return (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def _question(row: dict[str, Any]) -> str | list[dict[str, str]]:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise MalformedRow("empty prompt")
        return prompt  # byte for byte: templates and rewards see the question exactly as published
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    raise MalformedRow("prompt is neither text nor a message list",
                       f"prompt must be text or a list of {{role, content}} messages, got {type(prompt).__name__}: {str(prompt)[:100]}")


def _answer_text(value: Any) -> str:
    """A final answer as text: strings stripped, integral floats (AMC's 142.0) written as integers."""
    if isinstance(value, bool):
        raise MalformedRow("answer is not text or a number", f"answer must be text or a number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise MalformedRow("answer is not text or a number",
                           f"answer must be text or a number, got {type(value).__name__}: {str(value)[:100]}")
    if not value.strip():
        raise MalformedRow("empty answer")
    return value.strip()


def _answers(value: Any) -> str | list[str]:
    """One answer as text, or a list of acceptable alternatives as a list of texts (Minerva: ["6630.65\\n", "6630\\n"])."""
    if isinstance(value, list):
        if not value:
            raise MalformedRow("empty answer", "answer is an empty list")
        return [_answer_text(item) for item in value]
    return _answer_text(value)


def math_handler(row: dict[str, Any]) -> Example:
    """Question and final answer(s) as given; the worked solution (if any) kept in extra_info."""
    extra = {"solution": row["solution"]} if isinstance(row.get("solution"), str) else {}
    return Example(_question(row), _answers(row["answer"]), extra)


def gsm8k_handler(row: dict[str, Any]) -> Example:
    """GSM8K: the ground truth is the number after the last "####", commas removed ("1,200" -> "1200")."""
    solution = row["answer"]
    if not isinstance(solution, str) or "####" not in solution:
        raise MalformedRow("answer without a '#### N' line",
                           f"a GSM8K answer ends with '#### N' (the final number); got {str(solution)[-100:]!r}")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise MalformedRow("empty answer", "nothing after '####' in the answer")
    return Example(_question(row), final, {"solution": solution})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _countdown_fields(row: dict[str, Any]) -> tuple[list[int], int]:
    nums, target = to_python(row["nums"]), to_python(row["target"])
    # CSV cells hold the list and the number as text: "[44, 19, 35]" and "98".
    if isinstance(nums, str):
        try:
            nums = json.loads(nums)
        except json.JSONDecodeError:
            pass
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if not isinstance(nums, list) or not nums or not all(_is_int(n) for n in nums):
        raise MalformedRow("'nums' is not a list of integers", f"'nums' must be a list of integers, got {nums!r}")
    if not _is_int(target):
        raise MalformedRow("'target' is not an integer", f"'target' must be an integer, got {target!r}")
    return nums, target


def countdown_handler(row: dict[str, Any]) -> Example:
    """TinyZero's Countdown row from `target` and `nums`: the whole base prompt goes into the message."""
    nums, target = _countdown_fields(row)
    return Example(
        countdown_prompt(nums, target),
        {"numbers": nums, "target": target},
        columns={"target": target, "nums": nums},
    )


GPQA_INSTRUCTION = (
    "Answer the following multiple choice question. The last line of your response should be of the following "
    "format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step before answering."
)
GPQA_SEED = "gpqa-options"  # with the question text, seeds the order of the options


def gpqa_options(question: str, correct: str, incorrect: list[str]) -> tuple[list[str], str]:
    """The four answers in their shuffled order and the letter the correct one landed on."""
    options = [correct, *incorrect]
    order = list(range(len(options)))
    random.Random(f"{GPQA_SEED}:{question}").shuffle(order)  # str seeds hash with sha512: stable across runs
    shuffled = [options[i] for i in order]
    return shuffled, "ABCD"[order.index(0)]


def _option_text(row: dict[str, Any], field: str) -> str:
    value = row[field]
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
        raise MalformedRow(f"empty or non-text '{field}'", f"'{field}' must be a non-empty text, got {value!r}")
    return str(value).strip()


def gpqa_handler(row: dict[str, Any]) -> Example:
    """GPQA: the shuffled-options prompt; the gold letter follows the shuffle."""
    question = _question(row)
    if not isinstance(question, str):
        raise MalformedRow("prompt is not text", "a GPQA question must be text")
    correct = _option_text(row, "correct")
    incorrect = [_option_text(row, f"incorrect_{k}") for k in (1, 2, 3)]
    options, letter = gpqa_options(question.strip(), correct, incorrect)
    lines = "\n".join(f"{'ABCD'[i]}) {text}" for i, text in enumerate(options))
    prompt = f"{GPQA_INSTRUCTION}\n\n{question.strip()}\n\n{lines}"
    extra = {"correct_answer": correct}
    if isinstance(row.get("Record ID"), str):
        extra["record_id"] = row["Record ID"]
    return Example(prompt, {"answer": letter, "options": options}, extra)


HANDLERS: dict[str, Handler] = {
    "math": Handler(math_handler, ("prompt", "answer")),
    "gsm8k": Handler(gsm8k_handler, ("prompt", "answer")),
    "countdown": Handler(countdown_handler, ("target", "nums")),
    "gpqa": Handler(gpqa_handler, ("prompt", "correct", "incorrect_1", "incorrect_2", "incorrect_3")),
}


def load_handler(spec: str) -> Handler:
    """A built-in handler by name, or a user's "package.module:function" (which reads only mapped fields)."""
    if spec in HANDLERS:
        return HANDLERS[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"unknown handler {spec!r}: give a built-in one ({', '.join(sorted(HANDLERS))}) "
                        "or your own as package.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, SyntaxError) as e:
        raise UserError(f"handler {spec!r}: cannot import it ({type(e).__name__}: {e}); is the module on PYTHONPATH?") from None
    if not callable(fn):
        raise UserError(f"handler {spec!r} is a {type(fn).__name__}, not a function")
    return Handler(fn, ())
