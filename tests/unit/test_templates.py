"""Prompt templates: exact built-in texts, message-list handling, `chat`, stop strings, errors and user templates."""
import json

import numpy as np
import pytest

from grpo.errors import UserError
from grpo.templates import TEMPLATES, load_user_templates, render_prompt, template_stop_strings

QUESTION = "What is 2 + 3?"


def test_qwen_r1_exact_text():
    text = render_prompt("qwen_r1", QUESTION)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nA conversation")
    # The literal backslash + "boxed{}" must survive (str.format would have failed on the braces).
    assert "Put your final answer within \\boxed{}.\nWhat is 2 + 3?<|im_end|>\n" in text
    assert text.endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert "{question}" not in text
    assert text.count("\\boxed{}") == 1


def test_base_r1_ends_with_open_think():
    text = render_prompt("base_r1", QUESTION)
    assert text.startswith("A conversation between User and Assistant.")
    assert f"\nUser: {QUESTION} Show your work in <think> </think> tags." in text
    assert text.endswith("\nAssistant: Let me solve this step by step.\n<think>")


def test_raw_on_message_list_returns_last_user_content():
    # Parquet gives message lists back as numpy object arrays; the last user message is the question.
    messages = np.array(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"}, {"role": "user", "content": "whole prompt"}],
        dtype=object,
    )
    assert render_prompt("raw", messages) == "whole prompt"
    assert render_prompt("raw", "as given {x}") == "as given {x}"
    # A named template wraps the user content as the question.
    assert render_prompt("base_r1", [{"role": "user", "content": QUESTION}]) == render_prompt("base_r1", QUESTION)


class _ChatTokenizer:
    """Stands in for a tokenizer: records what apply_chat_template got."""

    chat_template = "{% for m in messages %}...{% endfor %}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_chat_uses_tokenizer_template():
    tok = _ChatTokenizer()
    assert render_prompt("chat", QUESTION, tok) == f"<user>{QUESTION}<assistant>"
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_prompt("chat", np.array(messages, dtype=object), tok) == "<system>S<user>U<assistant>"


def test_chat_with_real_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    assert render_prompt("chat", "hi", tok) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_without_tokenizer_is_user_error():
    with pytest.raises(UserError, match="chat template"):
        render_prompt("chat", QUESTION)


def test_unknown_name_lists_known_names():
    with pytest.raises(UserError) as e:
        render_prompt("qwen-r1", QUESTION)
    for name in ("qwen_r1", "base_r1", "raw", "chat"):
        assert name in str(e.value)


def test_message_list_without_user_is_user_error():
    with pytest.raises(UserError, match="no 'user' message"):
        render_prompt("raw", [{"role": "system", "content": "x"}])


def test_user_templates_json(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"mine": "Q: {question}\nA: \\boxed{}"}))
    merged = load_user_templates(path)
    assert set(merged) == set(TEMPLATES) | {"mine"}
    assert render_prompt("mine", QUESTION, templates=merged) == "Q: What is 2 + 3?\nA: \\boxed{}"
    assert render_prompt("qwen_r1", QUESTION, templates=merged) == render_prompt("qwen_r1", QUESTION)
    with pytest.raises(UserError, match="unknown prompt template 'mine'"):
        render_prompt("mine", QUESTION)  # not in the built-in table


@pytest.mark.parametrize(
    "content, match",
    [("[1, 2]", "must be an object"), ('{"a": "no placeholder"}', "no \\{question\\} placeholder"),
     ('{"chat": "{question}"}', "reserved"), ('{"a": 3}', "must be a string"), ("{oops", "not valid JSON")],
)
def test_user_templates_bad_file(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match):
        load_user_templates(path)
    with pytest.raises(UserError, match="does not exist"):
        load_user_templates(tmp_path / "missing.json")


def test_stop_strings_of_built_in_templates():
    # qwen_r1 turns end with <|im_end|> (not a base tokenizer's EOS); base_r1 answers end with </answer>.
    assert template_stop_strings("qwen_r1") == ["<|im_end|>"]
    assert template_stop_strings("base_r1") == ["</answer>"]
    assert template_stop_strings("raw") == [] and template_stop_strings("chat") == []
    template_stop_strings("base_r1").append("x")  # a copy: callers cannot change the table
    assert template_stop_strings("base_r1") == ["</answer>"]
    with pytest.raises(UserError, match="unknown prompt template 'qwen-r1'"):
        template_stop_strings("qwen-r1")


def test_user_template_with_stop_strings(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"mine": {"template": "Q: {question}\nA:", "stop": ["\nQ:"]}, "qwen_r1": "{question}"}))
    merged = load_user_templates(path)
    assert render_prompt("mine", QUESTION, templates=merged) == "Q: What is 2 + 3?\nA:"
    assert template_stop_strings("mine", path) == ["\nQ:"]
    # A plain string entry replacing a built-in name has no stop strings: its text may end differently.
    assert template_stop_strings("qwen_r1", path) == [] and template_stop_strings("base_r1", path) == ["</answer>"]
    for entry, match in [({"text": "{question}"}, "needs \"template\""), ({"template": "{question}", "stop": "x"}, "list of non-empty strings"),
                         ({"template": "no placeholder"}, "no \\{question\\} placeholder")]:
        path.write_text(json.dumps({"bad": entry}))
        with pytest.raises(UserError, match=match):
            load_user_templates(path)
