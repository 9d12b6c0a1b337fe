"""R1-Zero format check: is the completion `<think>...</think>` then `<answer>...</answer>`?

It is logged as the "format" component of rewards (see grpo.rewards.score); it does not change
the built-in scores, which come from each task's own correctness check.
"""
from __future__ import annotations

import re

# Whitespace may surround and separate the two blocks; nothing else may follow </answer>
# (the end-of-text token is already stripped from the decoded text).
_SHAPE_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def check_format(response: str, prompt: str = "") -> float:
    """1.0 if the response has exactly one think block followed by one answer block, else 0.0.

    Prompts that end with "<think>" (TinyZero's "base" template) start the model inside the
    think block, so the opening tag is supplied from the prompt before checking.
    """
    text = "<think>" + response if prompt.rstrip().endswith("<think>") else response
    # exactly one of each tag: the lazy regex alone would accept a second block inside the first
    if any(text.count(tag) != 1 for tag in _TAGS):
        return 0.0
    return 1.0 if _SHAPE_RE.fullmatch(text) else 0.0
