"""R1-Zero format checks: did the completion use the template's shape? 1.0 or 0.0.

Three checks, by name in `FORMAT_CHECKS`:
- "think_answer": exactly one `<think>...</think>` then one `<answer>...</answer>`, nothing else
  around them but whitespace (`check_format`);
- "strict": that shape, and the answer block holds a `\\boxed{...}` (the qwen_r1 template asks
  for "<think> ... </think><answer> ... </answer>" and "Put your final answer within \\boxed{}");
- "loose": the reasoning is closed (`</think>`) and followed somewhere by an answer block or a
  `\\boxed{...}`; text around them and repeated tags are allowed.

Math and gsm8k scores add `reward.format_weight` times the configured check; the check is also
logged as the "format" component. Countdown and multiply keep TinyZero's own notion (a
well-formed answer earns 0.1).
"""
from __future__ import annotations

import re
from typing import Callable

from grpo.rewards.extract import last_boxed

# Whitespace may surround and separate the two blocks; nothing else may follow </answer>
# (the end-of-text token is already stripped from the decoded text).
_SHAPE_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _with_prompt_think(response: str, prompt: str) -> str:
    """Prompts that end with "<think>" (TinyZero's "base" template) start the model inside the
    think block, so the opening tag is supplied from the prompt before checking."""
    return "<think>" + response if prompt.rstrip().endswith("<think>") else response


def check_format(response: str, prompt: str = "") -> float:
    """1.0 if the response has exactly one think block followed by one answer block, else 0.0."""
    text = _with_prompt_think(response, prompt)
    # exactly one of each tag: the lazy regex alone would accept a second block inside the first
    if any(text.count(tag) != 1 for tag in _TAGS):
        return 0.0
    return 1.0 if _SHAPE_RE.fullmatch(text) else 0.0


def check_format_strict(response: str, prompt: str = "") -> float:
    """1.0 for `<think>...</think><answer>...\\boxed{...}...</answer>` (one of each tag), else 0.0."""
    if not check_format(response, prompt):
        return 0.0
    match = _SHAPE_RE.fullmatch(_with_prompt_think(response, prompt))
    return 1.0 if last_boxed(match.group(1)) is not None else 0.0


def check_format_loose(response: str, prompt: str = "") -> float:
    """1.0 when `</think>` is followed by an `<answer>` block or a `\\boxed{`, else 0.0."""
    text = _with_prompt_think(response, prompt)
    think_end = text.find("</think>")
    if think_end == -1:
        return 0.0
    answer = text.find("<answer>", think_end)
    if answer != -1 and text.find("</answer>", answer) != -1:
        return 1.0
    return 1.0 if re.search(r"\\boxed\s*\{", text[think_end:]) else 0.0


FORMAT_CHECKS: dict[str, Callable[[str, str], float]] = {
    "strict": check_format_strict,
    "loose": check_format_loose,
    "think_answer": check_format,
}
