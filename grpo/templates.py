"""Prompt templates by name: turn a dataset prompt (a question or a chat message list) into model text.

Built-in names: `qwen_r1` (Qwen chat markup around the R1-Zero instruction), `base_r1` (TinyZero's
base-model style, ending in an open `<think>`), `raw` (the question as given) and `chat` (whatever
chat template the tokenizer carries). Users can add their own names with a JSON file of
name -> template string, or name -> {"template": string, "stop": [strings]} (`load_user_templates`).

Each template knows the strings that end a completion in its format (`template_stop_strings`):
generation stops there besides the tokenizer's EOS token (`stop_strings` adds the recipe's own).

A template is a plain string with one `{question}` placeholder. Rendering uses `str.replace`, not
`str.format`, because R1 prompts contain literal braces (`\\boxed{}`) that format() would choke on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grpo.errors import UserError

_R1_INSTRUCTION = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer."
)

TEMPLATES: dict[str, str] = {
    # As the MindSpeed-RL R1-Zero reproduction documents it (docs/solutions/r1_zero_qwen25_7b.md, trained
    # on DeepScaleR): no ". " between "</answer>" and "Put"; its later configs/model/templates.json
    # added one. The system turn is that template's default_system.
    "qwen_r1": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + _R1_INSTRUCTION
        + " The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
        "tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
        "Put your final answer within \\boxed{}.\n{question}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "base_r1": (
        _R1_INSTRUCTION
        + "\nUser: {question} Show your work in <think> </think> tags. And return the final answer in "
        "<answer> </answer> tags.\nAssistant: Let me solve this step by step.\n<think>"
    ),
    "raw": "{question}",
}

# Not a string template: the tokenizer's own chat template renders the message list.
CHAT = "chat"
PLACEHOLDER = "{question}"

# Strings that end a completion, per template, besides the tokenizer's EOS token (the stop string is kept).
TEMPLATE_STOPS: dict[str, list[str]] = {
    # A base Qwen2.5 tokenizer's EOS is <|endoftext|>, but in chat markup the turn ends with <|im_end|>:
    # without this stop a base model writes the next "<|im_start|>user" turn itself (MindSpeed-RL's
    # stop_words for qwen_r1 are the same). For an instruct tokenizer it is the EOS already: harmless.
    "qwen_r1": ["<|im_end|>"],
    # A base model has no end-of-turn token; once the answer tag closes, anything after it is
    # rambling that the reward ignores and the loss would still pay for.
    "base_r1": ["</answer>"],
    # The text is the data's own: its format, hence its stop, is unknown here (set rollout.stop).
    "raw": [],
    # The tokenizer's chat template ends turns with its own EOS token, which already stops generation.
    CHAT: [],
}


def _read_user_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a user templates file, or a UserError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"templates file {path} does not exist; give a JSON file mapping name -> template string")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"templates file {path} is not valid JSON ({e}); it must be an object name -> template string")
    if not isinstance(loaded, dict):
        raise UserError(
            f"templates file {path} holds a JSON {type(loaded).__name__}; it must be an object name -> template string"
        )
    return loaded


def _user_entry(path: str | Path, name: str, entry: Any) -> tuple[str, list[str]]:
    """(template text, stop strings) of one user entry: a string, or {"template": ..., "stop": [...]}."""
    if name == CHAT:
        raise UserError(f"templates file {path}: the name 'chat' is reserved for the tokenizer's chat template; rename it")
    stop: Any = []
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"template", "stop"})
        if unknown or "template" not in entry:
            raise UserError(
                f"templates file {path}: template '{name}' is an object with keys {sorted(entry)}; "
                'an object entry needs "template" (the text) and may have "stop" (a list of strings)'
            )
        entry, stop = entry["template"], entry.get("stop", [])
        if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
            raise UserError(f"templates file {path}: template '{name}' has stop {stop!r}; it must be a list of non-empty strings")
    if not isinstance(entry, str):
        raise UserError(f"templates file {path}: template '{name}' is a {type(entry).__name__}; it must be a string")
    # Without the placeholder every prompt would render to the same text: surely a typo.
    if PLACEHOLDER not in entry:
        raise UserError(f"templates file {path}: template '{name}' has no {PLACEHOLDER} placeholder; add one where the question goes")
    return entry, list(stop)


def load_user_templates(path: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Read a user templates file and return its texts merged over `base` (default TEMPLATES).

    Entries are name -> template string, or name -> {"template": string, "stop": [strings]}.
    """
    loaded = _read_user_file(path)
    texts = {name: _user_entry(path, name, entry)[0] for name, entry in loaded.items()}
    return {**(TEMPLATES if base is None else base), **texts}


def _as_messages(prompt: Any) -> list[dict[str, str]] | None:
    """A message list as plain dicts, or None when `prompt` is a single string.

    Parquet hands message lists back as numpy object arrays of dicts, so anything list-like counts.
    """
    if isinstance(prompt, str):
        return None
    if hasattr(prompt, "tolist") and not isinstance(prompt, dict):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        raise UserError(
            f"prompt must be a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}: "
            f"{str(prompt)[:200]}"
        )
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def render_prompt(template: str, prompt: Any, tokenizer: Any = None, templates: dict[str, str] | None = None) -> str:
    """The exact text given to the model for `prompt` (a question string or a message list).

    For a message list with a string template the question is the last user message's content;
    with `chat` the whole list goes through `tokenizer.apply_chat_template`.
    """
    table = TEMPLATES if templates is None else templates
    messages = _as_messages(prompt)
    if template == CHAT:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError(
                "template 'chat' needs a tokenizer with a chat template; pick a string template "
                f"({', '.join(sorted(table))}) or use a chat/instruct model's tokenizer"
            )
        if messages is None:
            messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template not in table:
        raise UserError(f"unknown prompt template '{template}'; known: {', '.join(sorted([*table, CHAT]))}")
    if messages is None:
        question = prompt
    else:
        user = [m["content"] for m in messages if m["role"] == "user"]
        if not user:
            raise UserError(f"prompt message list has no 'user' message (roles: {[m['role'] for m in messages]})")
        question = user[-1]
    return table[template].replace(PLACEHOLDER, question)


def template_stop_strings(name: str, templates_file: str | Path | None = None) -> list[str]:
    """Strings that end a completion for template `name` (besides EOS), e.g. ["</answer>"] for base_r1.

    A name defined in `templates_file` takes its "stop" list from there (none for a plain string
    entry, even when it replaces a built-in name: the user's text may end differently).
    """
    if templates_file:
        loaded = _read_user_file(templates_file)
        if name in loaded:
            return _user_entry(templates_file, name, loaded[name])[1]
    if name not in TEMPLATE_STOPS:
        raise UserError(f"unknown prompt template '{name}'; known: {', '.join(sorted(TEMPLATE_STOPS))}")
    return list(TEMPLATE_STOPS[name])


def stop_strings(template: str, templates_file: str | Path | None, extra: list[str]) -> list[str]:
    """What ends a completion of a run: the recipe's own stop strings (`extra`, rollout.stop) then the
    template's, without repeats; the trainer's rollouts and the evaluator's use the same list."""
    return list(dict.fromkeys(list(extra) + template_stop_strings(template, templates_file or None)))
