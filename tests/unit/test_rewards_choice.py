"""Multiple choice: reading the chosen letter (grpo/rewards/choice.py) and the GPQA data handler.

GPQA is gated on the hub, so the handler is tested on rows written here (made-up questions with
GPQA's field names), through the same `prepare` path `launch/prepare_data.py` takes.
"""
from __future__ import annotations

import csv
import json

import pytest

from grpo.data.dataset_config import load_dataset_config
from grpo.data.handlers import GPQA_INSTRUCTION, gpqa_handler, gpqa_options
from grpo.data.prepare import apply_overrides, prepare
from grpo.errors import UserError
from grpo.rewards.choice import chosen_letter, gold_choice, verify_choice

OPTIONS = ["2 m/s", "4 m/s", "8 m/s", "16 m/s"]
GOLD = {"answer": "C", "options": OPTIONS}


@pytest.mark.parametrize("response", [
    pytest.param("\\boxed{C}", id="boxed_letter"),
    pytest.param("so it must be (C).", id="parenthesised_letter_ends_the_text"),
    pytest.param("Working...\nAnswer: C", id="simple_evals_answer_line"),
    pytest.param("Answer: $C$", id="answer_line_with_dollars"),
    pytest.param("Therefore the correct option is C.", id="correct_option_is"),
    pytest.param("The best answer is (c).", id="lower_case_letter_in_parentheses"),
    pytest.param("Option C is correct.", id="option_letter_is_correct"),
    pytest.param("**Answer: (C) 8 m/s**", id="letter_with_its_option_text"),
    pytest.param("\\boxed{\\textbf{(C)}}", id="bold_parenthesised_letter_boxed"),
    pytest.param("The speed is 8 m/s.", id="the_option_text_in_the_last_sentence"),
    pytest.param("The answer is 8.", id="the_option_value"),
    pytest.param("<think>Answer: B</think>\nThe correct answer is C.", id="after_think_counts"),
])
def test_choice_accepts(response):
    assert verify_choice(response, GOLD)


@pytest.mark.parametrize("response", [
    pytest.param("\\boxed{B}", id="another_letter"),
    pytest.param("\\boxed{A, C}", id="two_letters_in_one_box"),
    pytest.param("It is C or D.", id="two_letters_joined_by_or"),
    pytest.param("The answer is (A) and (C).", id="two_parenthesised_letters"),
    pytest.param("<think>Answer: C</think>\nAnswer: D", id="gold_letter_only_inside_think"),
    pytest.param("The speed is 4 m/s.", id="another_option_text"),
    pytest.param("The speed is 4 m/s or 8 m/s.", id="two_option_texts"),
    pytest.param("the answer is a prime number", id="article_a_is_not_option_a"),
    pytest.param("Answer: E", id="letter_beyond_the_options"),
    pytest.param("I am not sure.", id="no_choice"),
])
def test_choice_rejects(response):
    assert not verify_choice(response, GOLD)


def test_letter_phrases_never_backtrack_over_long_whitespace():
    # overlapping whitespace loops in the phrase regex made these take minutes; now each is one pass
    import time

    start = time.perf_counter()
    for response in ["the answer is" + " " * 20_000 + "x", ("Answer:" + " " * 300 + "\n") * 60, "answer:" + "** $ " * 3000]:
        assert not verify_choice(response, GOLD)
    assert time.perf_counter() - start < 30  # a hang bound, not a speed claim (see benchmarks/)


def test_gold_letter_alone_and_malformed_golds():
    assert gold_choice("(b)") == ("B", None)
    assert verify_choice("Answer: J", "J")  # ten options (MMLU-Pro) without option texts
    assert chosen_letter("\\boxed{D}") == "D"
    with pytest.raises(UserError, match="choice ground_truth"):
        gold_choice("CD")
    with pytest.raises(UserError, match="choice ground_truth"):
        gold_choice({"answer": "E", "options": OPTIONS})  # E is not among four options


# ---------------------------------------------------------------- GPQA rows -> prompts

ROWS = [
    {"Question": "A ball is dropped from rest. How far does it fall in the first 2 s (g = 10 m/s^2)?",
     "Correct Answer": "20 m", "Incorrect Answer 1": "10 m", "Incorrect Answer 2": "40 m",
     "Incorrect Answer 3": "5 m", "Record ID": "rec1"},
    {"Question": "Which gas makes up most of Earth's atmosphere?", "Correct Answer": "Nitrogen",
     "Incorrect Answer 1": "Oxygen", "Incorrect Answer 2": "Argon", "Incorrect Answer 3": "Carbon dioxide",
     "Record ID": "rec2"},
]


def test_gpqa_shuffle_is_seeded_by_the_question_and_the_gold_letter_follows():
    question, correct = ROWS[0]["Question"], ROWS[0]["Correct Answer"]
    options, letter = gpqa_options(question, correct, ["10 m", "40 m", "5 m"])
    assert sorted(options) == sorted([correct, "10 m", "40 m", "5 m"])
    assert options["ABCD".index(letter)] == correct
    assert gpqa_options(question, correct, ["10 m", "40 m", "5 m"]) == (options, letter)  # the same every time
    letters = {gpqa_options(f"question {k}", "right", ["w1", "w2", "w3"])[1] for k in range(40)}
    assert letters == set("ABCD")  # the gold is not always in one place


def test_gpqa_rows_prepare_into_scored_prompts(tmp_path):
    source = tmp_path / "gpqa_diamond.csv"
    with source.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    cfg = apply_overrides(load_dataset_config("recipes/datasets/gpqa.yaml"), source=str(source))
    (split,) = prepare(cfg, progress=False)
    assert split.split == "test" and len(split.rows) == 2
    row = split.rows[0]
    assert row["data_source"] == "gpqa"
    prompt = row["prompt"][0]["content"] if isinstance(row["prompt"], list) else row["prompt"]
    assert prompt.startswith(GPQA_INSTRUCTION) and ROWS[0]["Question"] in prompt
    truth = row["reward_model"]["ground_truth"]
    letter = truth["answer"]
    assert f"{letter}) 20 m" in prompt and truth["options"]["ABCD".index(letter)] == "20 m"
    assert row["extra_info"]["record_id"] == "rec1"
    # the rows' own answers score through the choice check, and a wrong letter does not
    assert verify_choice(f"Answer: {letter}", truth)
    assert not verify_choice(f"Answer: {'ABCD'[('ABCD'.index(letter) + 1) % 4]}", truth)
    json.dumps(truth)  # plain data: it goes into parquet


def test_gpqa_handler_rejects_an_empty_option():
    row = {"prompt": "Q?", "correct": "yes", "incorrect_1": "no", "incorrect_2": " ", "incorrect_3": "maybe"}
    from grpo.data.loader import MalformedRow

    with pytest.raises(MalformedRow, match="incorrect_2"):
        gpqa_handler(row)


def test_multiple_choice_data_sources_route_to_the_choice_kind():
    from grpo.rewards import answer_key, kind_of, score, verify

    for name in ("gpqa", "Idavidrein/gpqa", "mmlu", "cais/mmlu", "TIGER-Lab/MMLU-Pro", "gpqa_diamond_v2"):
        assert kind_of(name) == "choice", name
    tagged = "<think>t</think><answer>\\boxed{C}</answer>"
    assert score("gpqa", tagged, GOLD).components == {"accuracy": 1.0, "format": 1.0}
    assert score("mmlu", "\\boxed{B}", "C").score == 0.0
    assert answer_key("choice", "Answer: (c)") == answer_key("choice", "\\boxed{C}") == "C"
    assert verify("choice", "Answer: C", GOLD) and not verify("choice", "Answer: C or D", GOLD)
