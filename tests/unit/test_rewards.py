"""Unit tests for grpo.rewards: countdown, multiply and gsm8k scoring, format checks, routing, user functions.

Countdown scores follow TinyZero: 1.0 correct, 0.1 tagged and well-formed but wrong, 0.0 no
usable answer. Each expected value says which rule produces it.
"""
import textwrap

import numpy as np
import pytest

from grpo.errors import UserError
from grpo.rewards import (
    FORMAT_CHECKS,
    SCORERS,
    RewardFunction,
    ScoreSettings,
    answer_key,
    check_format,
    check_format_loose,
    check_format_strict,
    kind_of,
    load_reward_function,
    score,
    score_countdown,
    verify_countdown,
)
from grpo.rewards import countdown
from grpo.types import RewardResult

GT = {"numbers": [44, 19, 35], "target": 98}  # first row of the countdown train split


def answer(eq: str) -> str:
    return f"<think>try things</think> <answer>{eq}</answer>"


# ---------------------------------------------------------------- countdown


def test_correct_equation_scores_one():
    # 44 + 19 + 35 = 98, every number used once
    r = score_countdown(answer("44 + 19 + 35"), GT)
    assert r.score == 1.0
    assert r.components == {"accuracy": 1.0, "format": 1.0}
    assert verify_countdown(answer("(44 + 35) + 19"), GT)


@pytest.mark.parametrize(
    "eq",
    [
        "44 + 44 + 10",  # = 98 but 44 reused and 19, 35 missing
        "63 + 35",  # = 98 but 44, 19 not given as such (63 is not a given number)
        "44 + 19 + 35 + 0",  # = 98 but uses an extra number
    ],
)
def test_right_value_wrong_numbers_scores_format_only(eq):
    r = score_countdown(answer(eq), GT)
    assert r.score == pytest.approx(0.1)
    assert r.components == {"accuracy": 0.0, "format": 1.0}
    assert not verify_countdown(answer(eq), GT)


def test_wrong_value_scores_format_only():
    # 44 + 19 - 35 = 28 != 98
    assert score_countdown(answer("44 + 19 - 35"), GT).score == pytest.approx(0.1)


def test_no_answer_tag_scores_zero():
    r = score_countdown("<think>44 + 19 + 35 = 98</think> 44 + 19 + 35", GT)
    assert r.score == 0.0
    assert r.components == {"accuracy": 0.0, "format": 0.0}
    # an unclosed tag is not an answer either
    assert score_countdown("<answer>44 + 19 + 35", GT).score == 0.0


def test_division_by_zero_scores_format_only():
    # well-formed, uses each number once, but 44 / (19 - 19) ... needs numbers [44, 19, 19, 35]
    gt = {"numbers": [44, 19, 19, 35], "target": 98}
    assert score_countdown(answer("44 / (19 - 19) + 35"), gt).score == pytest.approx(0.1)


def test_disallowed_characters_score_zero_and_are_never_evaluated(monkeypatch):
    # evaluating must never happen for code-like answers: make it explode if it does
    def boom(node):
        raise AssertionError("evaluated model text")

    monkeypatch.setattr(countdown, "_evaluate", boom)
    for eq in ["__import__('os').system('echo hi')", "abs(-98)", "44 + 19 + 35; 1", "98 if 1 else 0"]:
        # letters, quotes, ';' fall outside TinyZero's [\d+\-*/().\s] -> no usable answer
        assert score_countdown(answer(eq), GT).score == 0.0, eq


def test_power_is_well_formed_but_not_evaluable():
    # '*' is in TinyZero's character set, so "2**10" is well-formed text (0.1, not 0.0); but
    # powers are not a countdown operation and are outside the whitelist, so it is never
    # computed and cannot be correct even though 2**10 = 1024 uses exactly [2, 10].
    assert score_countdown(answer("2**10"), {"numbers": [2, 10], "target": 1024}).score == pytest.approx(0.1)
    # the same guard stops a huge power from being computed at all (this returns instantly)
    assert score_countdown(answer("9**9**9**9"), {"numbers": [9, 9, 9, 9], "target": 1}).score == pytest.approx(0.1)


@pytest.mark.parametrize("eq", ["44 // 19", "3.5 * 28", "(44)(19)", "44 +", "01 + 97"])
def test_other_unevaluable_expressions_score_format_only(eq):
    # floor division, float literals, implicit calls, syntax errors, leading zeros: all made of
    # allowed characters (so 0.1), none evaluable
    assert score_countdown(answer(eq), GT).score == pytest.approx(0.1)


def test_last_answer_tag_wins():
    wrong_then_right = "<answer>44 - 19 - 35</answer> wait, fix: <answer>44 + 19 + 35</answer>"
    right_then_wrong = "<answer>44 + 19 + 35</answer> hmm: <answer>44 - 19 - 35</answer>"
    assert score_countdown(wrong_then_right, GT).score == 1.0
    assert score_countdown(right_then_wrong, GT).score == pytest.approx(0.1)


def test_fraction_arithmetic_is_exact():
    # 8 / (3 - 8/3) = 8 / (1/3) = 24 exactly; in floats 3 - 8/3 = 0.33333333333333348 and the
    # result is 23.99999999999999, which the 1e-5 tolerance would also accept, but the
    # Fraction route never depends on the tolerance
    assert score_countdown(answer("8/(3-8/3)"), {"numbers": [3, 3, 8, 8], "target": 24}).score == 1.0
    # 1/3 + 1/3 + 1/3 = 1 exactly (0.9999999999999999 in floats)
    assert score_countdown(answer("1/3 + 1/3 + 1/3"), {"numbers": [1, 1, 1, 3, 3, 3], "target": 1}).score == 1.0


def test_unary_minus_is_allowed():
    # -19 + 44 + 35 = 60; '-' is in TinyZero's character set, so this is a legal equation
    assert score_countdown(answer("-19 + 44 + 35"), {"numbers": [19, 44, 35], "target": 60}).score == 1.0


def test_numpy_ground_truth():
    # parquet rows arrive with numpy arrays and numpy ints
    gt = {"numbers": np.array([44, 19, 35]), "target": np.int64(98)}
    assert score_countdown(answer("44 + 19 + 35"), gt).score == 1.0
    gt_tuple = {"numbers": (44, 19, 35), "target": 98}
    assert score_countdown(answer("44 + 19 + 35"), gt_tuple).score == 1.0


def test_bad_ground_truth_is_a_user_error():
    with pytest.raises(UserError, match="numbers"):
        score_countdown(answer("1"), {"target": 1})


def test_overlong_or_too_many_numbers_score_zero():
    # 201 characters > MAX_EQUATION_CHARS (200): rejected before parsing, scored as no answer
    long_eq = "1+" * 100 + "1"
    assert len(long_eq) == 201
    assert score_countdown(answer(long_eq), {"numbers": [1] * 101, "target": 101}).score == 0.0
    # 21 numbers > MAX_NUMBERS (20), even though short
    many = "+".join(["1"] * 21)
    assert score_countdown(answer(many), {"numbers": [1] * 21, "target": 21}).score == 0.0
    # 20 numbers is still allowed: 1 * 20 = 20
    ok = "+".join(["1"] * 20)
    assert score_countdown(answer(ok), {"numbers": [1] * 20, "target": 20}).score == 1.0


def test_deep_nesting_finishes():
    # 99 nested parentheses fit in 200 characters; parsing either works or fails cleanly
    eq = "(" * 99 + "1" + ")" * 99
    assert score_countdown(answer(eq), {"numbers": [1], "target": 1}).score in (0.1, 1.0)


# ---------------------------------------------------------------- countdown with the work shown

SMALL = {"numbers": [7, 3, 2], "target": 19}  # 7*3-2 = 19


def worked(*lines: str, answer_text: str = "(7*3)-2") -> str:
    return " [7, 3, 2] -> 19\n" + "\n".join(lines) + f"\n</think>\n<answer> {answer_text} </answer>"


@pytest.mark.parametrize("lines, shown", [
    (["7*3=21,21-2=19"], True),                             # 21 = 7*3 and 19 = 21-2, ends at the target
    (["7 * 3 = 21, 21 - 2 = 19"], True),                    # spaces are fine
    (["7+3=10,10*2=20", "wait 7*3=21,21-2=19"], True),      # an abandoned try before is not judged
    (["7*3=21,21-2=19", "verify 7*3=21,21-2=19 ok"], True),  # the check is the last worked line
    (["7*3=21,21-2=18"], False),                            # true steps that miss the target
    (["7*3=20,20-1=19"], False),                            # reaches 19 through a false step (7*3 is 21)
    (["7*3=21,21-2=19", "wait 7+3=10,10*2=20"], False),     # the last try misses
    (["6/0=0,0+19=19"], False),                             # division by zero is no step
    ([], False),                                            # no worked line at all
])
def test_work_reaches_target(lines, shown):
    assert countdown.work_reaches_target(worked(*lines), 19) is shown


@pytest.mark.parametrize("lines, outcome", [
    (["7*3=21,21-2=19"], (True, False)),                         # a hit, nothing after it
    (["7*3=21,21-2=19", "verify 7*3=21,21-2=19 ok"], (True, True)),  # a hit, then a re-check
    (["7*3=21,21+2=23"], (False, False)),                        # a miss the response stops at
    (["7*3=21,21+2=23", "wait 7*3=21,21-2=19"], (False, True)),  # a miss, then a retry
    (["7*3=20,20-1=19"], (True, False)),                         # judged as written: the false step still "reaches" 19
    (["no steps here"], None),                                   # no worked line: no first try
    (["1+1=2," * 200], None),                                    # 1200 characters: not a step anyone writes
])
def test_first_try(lines, outcome):
    assert countdown.first_try(worked(*lines), 19) == outcome


def test_score_countdown_shown_pays_a_right_answer_only_with_its_derivation():
    shown = countdown.score_countdown_shown("countdown", worked("7*3=21,21-2=19"), SMALL)
    assert shown == RewardResult(1.0, {"accuracy": 1.0, "format": 1.0, "work": 1.0})
    # the same right answer after a false step scores as a wrong one (TinyZero's 0.1), its accuracy kept
    guessed = countdown.score_countdown_shown("countdown", worked("7*3=20,20-1=19"), SMALL)
    assert guessed == RewardResult(0.1, {"accuracy": 1.0, "format": 1.0, "work": 0.0})
    # a wrong answer stays 0.1 and a missing one 0.0, whatever the work
    wrong = countdown.score_countdown_shown("countdown", worked("7*3=21,21-2=19", answer_text="(7*3)+2"), SMALL)
    assert wrong.score == 0.1 and wrong.components["accuracy"] == 0.0
    assert countdown.score_countdown_shown("countdown", " 7*3=21,21-2=19", SMALL).score == 0.0


def test_score_countdown_shown_loads_as_a_reward_function_and_refuses_other_data():
    reward_fn = RewardFunction(["grpo.rewards.countdown:score_countdown_shown"])
    assert reward_fn("countdown", worked("7*3=20,20-1=19"), SMALL, "").score == 0.1
    assert reward_fn("countdown", worked("7*3=21,21-2=19"), SMALL, "").score == 1.0
    with pytest.raises(UserError, match="countdown rows only.*'gsm8k'"):
        reward_fn("gsm8k", "#### 4", "4", "")


# ---------------------------------------------------------------- format


@pytest.mark.parametrize(
    "response, prompt, expected",
    [
        ("<think>a</think><answer>1</answer>", "", 1.0),
        ("  <think>\na\n</think>\n\n<answer> 1 </answer>\n", "", 1.0),  # whitespace is fine
        ("<think>a</think><answer>1</answer> trailing", "", 0.0),  # text after </answer>
        ("preamble <think>a</think><answer>1</answer>", "", 0.0),  # text before <think>
        ("<answer>1</answer><think>a</think>", "", 0.0),  # wrong order
        ("<think>a</think>", "", 0.0),  # no answer block
        ("<answer>1</answer>", "", 0.0),  # no think block
        ("<think>a</think><think>b</think><answer>1</answer>", "", 0.0),  # two think blocks
        ("<think>a</think><answer>1</answer><answer>2</answer>", "", 0.0),  # two answer blocks
        ("<think>a</think> between <answer>1</answer>", "", 0.0),  # text between blocks
        # TinyZero "base" prompt ends in <think>: the response starts inside the think block
        (" reasoning</think>\n<answer>1</answer>", "Assistant: Let me solve this step by step.\n<think>", 1.0),
        (" reasoning</think>\n<answer>1</answer>", "...<think>\n  ", 1.0),  # trailing whitespace
        # ...and then a response that opens its own <think> has two of them
        ("<think>r</think><answer>1</answer>", "Assistant: <think>", 0.0),
        # without that prompt, the missing opening tag fails
        (" reasoning</think>\n<answer>1</answer>", "Assistant:", 0.0),
    ],
)
def test_check_format(response, prompt, expected):
    assert check_format(response, prompt) == expected


# ---------------------------------------------------------------- routing


def test_score_routes_countdown_and_keeps_its_format_component():
    r = score("countdown", answer("44 + 19 + 35"), GT)
    assert r.score == 1.0 and r.components == {"accuracy": 1.0, "format": 1.0}
    # countdown's own "format" (a well-formed answer was found) is kept, not check_format's:
    # here the think block is missing, so check_format would say 0.0
    r = score("countdown", "<answer>44 + 19 + 35</answer>", GT)
    assert r.components["format"] == 1.0


def test_unknown_data_source_names_it_and_the_known_ones():
    with pytest.raises(UserError) as err:
        score("no_such_task", "x", None)
    message = str(err.value)
    assert "no_such_task" in message and "countdown" in message and "reward.functions" in message


# ---------------------------------------------------------------- user functions


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `my_rewards` on sys.path with a float scorer, a RewardResult scorer and a non-callable."""
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            from grpo.types import RewardResult

            NOT_A_FUNCTION = 3

            def exact(data_source, response, ground_truth, prompt):
                return 1.0 if response.strip().endswith(str(ground_truth)) else 0.0

            def half(data_source, response, ground_truth, prompt):
                return RewardResult(0.5, {"length": float(len(response))})

            def bad_return(data_source, response, ground_truth, prompt):
                return "yes"
            """
        )
    )
    (tmp_path / "broken_rewards.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_load_reward_function(user_module):
    fn = load_reward_function("my_rewards:exact")
    assert fn("gsm8k", "so 42", 42, "") == 1.0


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("my_rewards.exact", "package.module:function"),  # no colon
        ("my_rewards:", "package.module:function"),  # no function name
        ("no_such_module_xyz:f", "No module named 'no_such_module_xyz'"),  # ImportError text included
        ("broken_rewards:f", "no_such_dependency_xyz"),  # the module's own import fails
        ("my_rewards:missing", "has no attribute 'missing'"),
        ("my_rewards:NOT_A_FUNCTION", "not a callable"),
    ],
)
def test_load_reward_function_errors(user_module, spec, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        load_reward_function(spec)
    assert spec in str(err.value)


def test_reward_function_without_specs_uses_builtin_routing():
    reward_fn = RewardFunction([])
    assert reward_fn("countdown", answer("44 + 19 + 35"), GT, "").score == 1.0


def test_reward_function_float_user_function(user_module):
    reward_fn = RewardFunction(["my_rewards:exact"])
    # score 1.0 >= 1.0 -> accuracy 1.0; format from check_format (think + answer present)
    r = reward_fn("gsm8k", "<think>6*7</think><answer>42</answer>\n42", 42, "")
    assert r.score == 1.0
    assert r.components == {"accuracy": 1.0, "format": 0.0}  # text after </answer> -> format 0.0
    r = reward_fn("gsm8k", "<think>6*7</think><answer>41</answer>", 42, "")
    assert r.components == {"accuracy": 0.0, "format": 1.0}


def test_reward_function_sums_scores_and_takes_first_components(user_module):
    reward_fn = RewardFunction(["my_rewards:half", "my_rewards:exact"])
    response = "<think>t</think><answer>42</answer>"
    r = reward_fn("gsm8k", response, "42</answer>", "")
    # half gives 0.5, exact gives 1.0 (the response ends with the ground truth) -> 1.5
    assert r.score == pytest.approx(1.5)
    # components are half's: its own "length", plus accuracy (0.5 < 1.0 -> 0.0) and format (1.0)
    assert r.components == {"length": float(len(response)), "accuracy": 0.0, "format": 1.0}
    assert isinstance(r, RewardResult)


def test_reward_function_bad_return_type(user_module):
    reward_fn = RewardFunction(["my_rewards:bad_return"])
    with pytest.raises(UserError, match="must return a float"):
        reward_fn("gsm8k", "x", 1, "")


def test_reward_function_rejects_a_bare_string():
    with pytest.raises(UserError, match="list"):
        RewardFunction("my_rewards:exact")


# ---------------------------------------------------------------- format checks (strict / loose)


@pytest.mark.parametrize("response, prompt, strict, loose", [
    (r"<think>a</think><answer>so \boxed{1}</answer>", "", 1.0, 1.0),
    (r"<think>a</think><answer>1</answer>", "", 0.0, 1.0),  # no box: not strict
    (r"<think>a</think> blah <answer>\boxed{1}</answer> more", "", 0.0, 1.0),  # extra text: loose only
    (r"<think>a</think> the answer is \boxed{7}", "", 0.0, 1.0),  # box after the thought
    (r"<think>a \boxed{7}</think>", "", 0.0, 0.0),  # boxed only inside the thought
    (r"\boxed{7}", "", 0.0, 0.0),  # no thought at all
    (r" r</think><answer>\boxed{2}</answer>", "Assistant: <think>", 1.0, 1.0),  # prompt opens <think>
    (r"<think>a</think><answer>\boxed{1</answer>", "", 0.0, 1.0),  # unclosed box: not strict
])
def test_strict_and_loose_format(response, prompt, strict, loose):
    assert check_format_strict(response, prompt) == strict
    assert check_format_loose(response, prompt) == loose
    assert FORMAT_CHECKS["strict"] is check_format_strict and FORMAT_CHECKS["loose"] is check_format_loose


def test_format_checks_are_linear_on_many_tags():
    import time

    # a quadratic scan of 200,000 tags would run for hours; a loaded machine needs milliseconds,
    # so the 30 s bound cannot flake and still catches the regression (speed: benchmarks/)
    text = "</think>" + "<answer>" * 200_000
    start = time.perf_counter()
    assert check_format_loose(text) == 0.0 and check_format_strict(text) == 0.0
    assert time.perf_counter() - start < 30


# ---------------------------------------------------------------- math, gsm8k, multiply scores

MATH_OK = r"<think>half</think><answer>\boxed{\frac{1}{2}}</answer>"


def test_math_score_is_accuracy_plus_weighted_format():
    # correct and strictly formatted: 1 + 0.1 * 1
    r = score("math", MATH_OK, "0.5", "", ScoreSettings(format_weight=0.1))
    assert r.score == pytest.approx(1.1) and r.components == {"accuracy": 1.0, "format": 1.0}
    # default weight 0: accuracy only (DeepScaleR / verl math)
    assert score("deepscaler", MATH_OK, "0.5").score == 1.0
    # wrong but formatted: 0 + 0.1
    assert score("math500", MATH_OK, "0.25", "", ScoreSettings(format_weight=0.1)).score == pytest.approx(0.1)
    # correct, answer tag without a box: strict says 0, loose says 1
    bare = "<think>half</think><answer>1/2</answer>"
    assert score("math", bare, "0.5", "", ScoreSettings(0.5, "strict")).score == 1.0
    assert score("math", bare, "0.5", "", ScoreSettings(0.5, "loose")).score == 1.5
    with pytest.raises(UserError, match="format_mode"):
        ScoreSettings(0.1, "strictest")


@pytest.mark.parametrize("response, truth, expected", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "#### 18", True),  # the dataset's own convention
    ("#### 1,200", "1200", True),
    (r"<answer>\boxed{\$1,200.00}</answer>", "#### 1,200", True),  # gold may carry commas too
    ("The answer is 18 dollars.", 18, True),
    ("I think 17, no wait, 18", "18", True),  # flexible: the last number
    ("18.5", "18", False),
    ("#### 17\nactually 18", "18", False),  # an explicit #### wins over later numbers
    ("<think>18</think> no idea", "18", False),  # numbers in the thought do not count
    ("-3", "-3", True),
])
def test_gsm8k(response, truth, expected):
    from grpo.rewards.gsm8k import verify_gsm8k

    assert verify_gsm8k(response, truth) is expected


def test_gsm8k_bad_ground_truth():
    from grpo.rewards.gsm8k import verify_gsm8k

    with pytest.raises(UserError, match="gsm8k ground_truth"):
        verify_gsm8k("#### 1", "forty-two")


@pytest.mark.parametrize("response, score_value, accuracy", [
    ("<answer>56088</answer>", 1.0, 1.0),  # 123 * 456 = 56088
    ("<answer>56,088</answer>", 1.0, 1.0),  # thousands commas accepted
    (r"<answer>\boxed{56088}</answer>", 1.0, 1.0),
    ("<answer>56089</answer>", 0.1, 0.0),  # TinyZero's format score: an integer, but wrong
    ("<answer>123*456</answer>", 0.0, 0.0),  # an expression is not an answer
    ("56088", 0.0, 0.0),  # no answer tag: TinyZero gives nothing
])
def test_multiply_scores_like_tinyzero(response, score_value, accuracy):
    r = score("multiply", response, 56088)
    assert r.score == pytest.approx(score_value) and r.components["accuracy"] == accuracy


def test_multiply_verify_takes_bare_answers_and_checks_the_gold():
    from grpo.rewards.multiply import verify_multiply

    assert verify_multiply("56088", "56088") and verify_multiply(r"\boxed{56,088}", 56088.0)
    assert not verify_multiply("56088.5", 56088)
    with pytest.raises(UserError, match="multiply ground_truth"):
        verify_multiply("1", "12.5")


def test_public_data_source_names_route_to_kinds():
    assert kind_of("openai/gsm8k") == "gsm8k" and kind_of("lighteval/MATH") == "math"
    assert kind_of("aime24") == "math" and kind_of("arithmetic") == "multiply"
    with pytest.raises(UserError, match="no built-in reward for data_source 'chess'"):
        kind_of("chess")
    for name in ("countdown", "gsm8k", "math", "multiply", "deepscaler", "HuggingFaceH4/MATH-500"):
        assert name in SCORERS


def test_answer_key_for_majority_voting():
    # same canonical spelling -> same vote; \dfrac12 and \frac{1}{2} agree
    assert answer_key("math", r"\boxed{\dfrac12}") == answer_key("math", r"<answer>\frac{1}{2}</answer>")
    assert answer_key("gsm8k", "#### 1,200") == answer_key("gsm8k", "The answer is 1200.") == "1200"
    assert answer_key("multiply", "<answer>7</answer>") == "7"
    assert answer_key("countdown", "<answer>1 + 2</answer>") == "1+2"
    assert answer_key("math", "nothing\nhere") is None
