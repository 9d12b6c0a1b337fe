"""The math verifier, category by category: what it accepts and what it rejects, and why (in each test id).

Categories follow issue 14: free-text answers, numbers with separators/currency/units/percent words,
relations, matrices, intervals, LaTeX artefacts, answers inside <think>, reward hacking, and the
tolerance rule by significant digits. Every case runs the whole check (`verify_math`: extraction
then equivalence) in this process; the arithmetic behind a verdict is in the id or a comment.
"""
from __future__ import annotations

import pytest

from grpo.rewards.extract import extract_answer, extract_strict
from grpo.rewards.format import check_format_strict
from grpo.rewards.freetext import free_text_answer, math_spans
from grpo.rewards.math import verify_math
from grpo.rewards.relations import INVALID, as_interval, settle
from grpo.rewards.parse import parse
from grpo.rewards.latex import normalize


def boxed(answer: str) -> str:
    return f"<think>work</think>\n<answer>\\boxed{{{answer}}}</answer>"


def _cases(*rows):
    return [pytest.param(gold, response, id=reason) for reason, gold, response in rows]


# ---------------------------------------------------------------- free text (the prose fallback)

@pytest.mark.parametrize("gold, response", _cases(
    ("answer_then_dollar_math_no_colon", "7", "Answer $7$"),
    ("display_brackets_at_the_end", "7", "So we get \\[ 7 \\]"),
    ("inline_parens_at_the_end", "7", "Thus \\( 7 \\)."),
    ("double_dollar_across_line_breaks", "7", "Collecting terms,\n$$\n7\n$$"),
    ("thousands_and_decimals_in_prose", "2500.75", "so the total is 2,500.75"),
    ("relation_in_the_last_sentence", "y \\geq 3", "Hence $y \\geq 3$ holds."),
    ("mention_of_x_then_the_number", "7", "Therefore the value of $x$ is 7."),
    ("check_question_after_the_answer", "4", "So the side is $4$.\nDoes $4^2 = 16$ fit? Yes."),
    ("setup_sentence_after_the_answer", "12", "So there are 12 ways. Let me double-check with $n = 4$: it works."),
    ("about_annotates_the_exact_value", "\\sqrt{2}", "The diagonal is $\\sqrt 2$, about $1.41$."),
    ("currency_dollars_are_not_math", "7", "It first costs $5 and then $7"),
    ("escaped_dollar_amount", "2500.75", "The total is \\$2,500.75 in all."),
    ("answer_block_holding_prose", "2500.75", "<answer>So the total is 2,500.75.</answer>"),
    ("markdown_bold_bare_answer", "7", "**7**"),
    ("spans_joined_by_and_are_one_list", "2, 3", "The solutions are $x = 2$ and $x = 3$."),
    ("numbers_joined_by_and_are_one_list", "2, 3", "So the roots are 2 and 3."),
))
def test_free_text_accepts(gold, response):
    assert verify_math(response, gold)


@pytest.mark.parametrize("gold, response", _cases(
    ("last_math_is_another_number", "7", "Answer $8$"),
    ("alternatives_joined_by_or", "7", "It is either $3$ or $7$."),
    ("restated_computation", "10", "Compute $2 \\cdot 5$."),
    ("setup_sentence_only", "5", "Let $n = 5$."),
    ("question_only", "4", "If $x + 1 = 5$, what is $x$?"),
    ("earlier_sentence_does_not_count", "3", "We get $9$. Could it be $3$? No, that fails."),
    ("no_number_at_all", "24", "I do not know."),
    ("a_list_is_not_its_last_item", "3", "The solutions are $x = 2$ and $x = 3$."),
))
def test_free_text_rejects(gold, response):
    assert not verify_math(response, gold)


def test_format_reward_ignores_the_prose_fallback():
    # the fallback finds 7 for correctness, but the strict extraction (and the format reward) does not
    response = "<think>t</think><answer>Answer $7$ is it</answer>"
    assert extract_strict("Answer $7$") is None and extract_answer("Answer $7$") == "7"
    assert check_format_strict(response) == 0.0


def test_math_spans_pair_delimiters_linearly_and_skip_currency():
    text = "cost $5 and $7, then $x = 2$ and \\[ y \\] and $$\nz\n$$"
    assert [s[2] for s in math_spans(text)] == ["x = 2", "y", "z"]
    assert free_text_answer("$" * 50_000) is None  # unpaired delimiters: no span, no hang


# ---------------------------------------------------------------- numbers, currency, units, percent words

@pytest.mark.parametrize("gold, answer", _cases(
    ("thousands_with_decimals", "2500.75", "2,500.75"),
    ("dollar_sign", "2500.75", "\\$2,500.75"),
    ("euro_sign_after", "2500.75", "2,500.75€"),
    ("unit_with_superscript", "2500.75", "2,500.75 km²"),
    ("unit_word", "2500.75", "2,500.75\\text{ dollars}"),
    ("pct_word", "35\\%", "35 pct"),
    ("percent_word", "35\\%", "35 percent"),
    ("percent_sign_as_fraction", "0.35", "35\\%"),
    ("millions", "1000000", "1,000,000"),
))
def test_numbers_accept(gold, answer):
    assert verify_math(boxed(answer), gold)


@pytest.mark.parametrize("gold, answer", _cases(
    ("cents_differ", "2500.75", "2,500.74"),
    ("separator_read_as_point", "2500.75", "2.50075"),
    ("cents_dropped", "2500.75", "\\$2,500"),
    ("another_percentage", "35\\%", "36 percent"),
    ("a_thousand_times_less", "1000000", "1,000"),
    ("bad_grouping_is_a_list", "2500", "25,00"),
    ("one_cent_in_a_large_amount", "11000.75", "11,000.74"),  # 1e-6 relative: still another amount
))
def test_numbers_reject(gold, answer):
    assert not verify_math(boxed(answer), gold)


# ---------------------------------------------------------------- relations

@pytest.mark.parametrize("gold, answer", _cases(
    ("negated_and_flipped", "y < 2", "-y > -2"),
    ("lt_spelling", "y < 2", "y \\lt 2"),
    ("reversed_sides", "x \\leq 4", "4 >= x"),
    ("ge_spellings", "x \\geq -1", "x \\ge -1"),
    ("ascii_ge", "x \\geq -1", "x >= -1"),
    ("neq_spelling", "x \\neq 1", "x != 1"),
    ("neq_as_union_of_rays", "x \\ne 1", "(-\\infty, 1) \\cup (1, \\infty)"),
    ("solved_linear_inequality", "3x + 2 > 8", "x > 2"),  # 3x > 6
    ("two_variable_inequality_rearranged", "x + y < 2", "y < 2 - x"),
    ("chain_last_side_named", "y = 9", "y = 2+3+4 = 9"),
    ("chain_last_side_number", "9", "y = 2+3+4 = 9"),
    ("computation_then_result", "9", "2+3+4 = 9"),
    ("approx_annotation_dropped", "\\frac{\\sqrt2}{2}", "\\frac{\\sqrt2}{2} \\approx 0.707"),
    ("approx_unicode", "2\\pi", "2\\pi ≈ 6.28"),
    ("approx_integer_rounded_to_tens", "548\\pi", "548\\pi \\approx 1720"),  # 1721.6, tens
    ("name_approx_value_five_digits", "\\frac{\\sqrt2}{2}", "x \\approx 0.70711"),
))
def test_relations_accept(gold, answer):
    assert verify_math(boxed(answer), gold)


@pytest.mark.parametrize("gold, answer", _cases(
    ("negated_without_flipping", "y < 2", "-y < -2"),
    ("strict_against_non_strict", "x > 2", "x \\geq 2"),
    ("another_variable", "x > 2", "y > 2"),
    ("equal_is_not_unequal", "x \\neq 2", "x = 2"),
    ("opposite_side_of_a_line", "x + y < 2", "y > 2 - x"),
    ("chain_ends_elsewhere", "9", "y = 2+3+4 = 10"),
    ("false_middle_side", "9", "y = 2+3 = 9"),
    ("wrong_annotation", "\\frac{\\sqrt2}{2}", "\\frac{\\sqrt2}{2} \\approx 0.866"),
    ("quadratic_is_not_linear", "x > 2", "x^2 > 4"),
    ("missing_answer_side", "9", "y ="),
))
def test_relations_reject(gold, answer):
    assert not verify_math(boxed(answer), gold)


def test_settle_reduces_chains_and_marks_contradictions():
    assert settle(parse(normalize("y = 2+3+4 = 9").text))[2][1] == parse("9")
    assert settle(parse(normalize("x = 3 = 9").text)) is INVALID
    # x != 2 is the union of the two open rays around 2
    assert as_interval(parse(normalize("x \\neq 2").text))[0] == "union"


# ---------------------------------------------------------------- matrices and vectors

M = "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"
V = "\\begin{pmatrix} \\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}"


@pytest.mark.parametrize("gold, answer", _cases(
    ("bmatrix", M, "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}"),
    ("array_in_left_right_brackets", M, "\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}\\right]"),
    ("dfrac_entries", V, "\\begin{bmatrix} \\dfrac13 \\\\ \\tfrac{2}{3} \\end{bmatrix}"),
    ("five_digit_decimal_entries", V, "\\begin{pmatrix} 0.33333 \\\\ 0.66667 \\end{pmatrix}"),
    ("vector_as_tuple", V, "(\\frac13, \\frac23)"),
    ("vector_as_square_brackets", V, "[\\frac13, \\frac23]"),
))
def test_matrices_accept(gold, answer):
    assert verify_math(boxed(answer), gold)


@pytest.mark.parametrize("gold, answer", _cases(
    ("rows_swapped", M, "\\begin{bmatrix} 3 & 4 \\\\ 1 & 2 \\end{bmatrix}"),
    ("transposed", M, "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}"),
    ("three_digit_decimals_too_few", V, "\\begin{pmatrix} 0.333 \\\\ 0.667 \\end{pmatrix}"),
    ("entries_reordered", V, "(\\frac23, \\frac13)"),
))
def test_matrices_reject(gold, answer):
    assert not verify_math(boxed(answer), gold)


# ---------------------------------------------------------------- intervals and the tolerance rule

@pytest.mark.parametrize("gold, answer", _cases(
    ("five_digit_decimal_ends", "(\\frac14, \\frac43]", "(0.25, 1.3333]"),
    ("truncated_ends", "(\\frac14, \\frac23]", "(0.25, 0.66666]"),
    ("inequality_chain", "[-2, 7)", "-2 \\le x < 7"),
    ("ray_as_inequality", "(-\\infty, 3]", "x \\leq 3"),
    ("scalar_five_digits", "\\frac{20000}{\\pi}", "6366.2"),  # 6366.198 rounds to it
))
def test_tolerance_accepts(gold, answer):
    assert verify_math(boxed(answer), gold)


@pytest.mark.parametrize("gold, answer", _cases(
    ("three_digit_end", "(\\frac14, \\frac43]", "(0.25, 1.33]"),
    ("bracket_differs", "(\\frac14, \\frac43]", "[0.25, 1.3333]"),
    ("off_by_more_than_one_unit", "(\\frac14, \\frac23]", "(0.25, 0.66676]"),
    ("three_digits_for_pi", "\\pi", "3.14"),
    ("four_digits_for_a_radical", "2\\sqrt{2}", "2.828"),
    ("near_an_integer", "7", "7.0001"),
))
def test_tolerance_rejects(gold, answer):
    assert not verify_math(boxed(answer), gold)


# ---------------------------------------------------------------- stray LaTeX artefacts

@pytest.mark.parametrize("gold, answer", _cases(
    ("trailing_backslash", "12", "12\\"),
    ("trailing_row_break", "12", "12\\\\"),
    ("negative_space_between_digits", "10080", "10,\\!080"),
    ("thin_space_separator", "10080", "10\\,080"),
    ("tfrac", "\\frac{3}{4}", "\\tfrac{3}{4}"),
    ("dfrac_unbraced", "\\frac{3}{4}", "\\dfrac34"),
    ("mathrm_letter", "E", "\\mathrm{E}"),
    ("trailing_backslash_after_a_fraction", "-\\frac{1}{2}", "-\\dfrac{1}{2}\\"),
))
def test_artifacts_accept(gold, answer):
    assert verify_math(boxed(answer), gold)


@pytest.mark.parametrize("gold, answer", _cases(
    ("tfrac_of_another_fraction", "\\frac{3}{4}", "\\tfrac{4}{3}"),
    ("backslash_on_another_number", "12", "21\\"),
    ("mathrm_other_letter", "E", "\\mathrm{D}"),
))
def test_artifacts_reject(gold, answer):
    assert not verify_math(boxed(answer), gold)


# ---------------------------------------------------------------- <think>

@pytest.mark.parametrize("gold, response, expected", [
    pytest.param("7", "<think>\\boxed{7}</think> The answer is 8.", False, id="boxed_in_think_then_another_answer"),
    pytest.param("8", "<think>\\boxed{7}</think> The answer is 8.", True, id="the_reply_after_think_counts"),
    pytest.param("7", "<think>so 7</think>\nAfter checking, it is 8.", False, id="prose_after_think_says_8"),
    pytest.param("7", "<think>\\boxed{3}</think>\n<answer>\\boxed{7}</answer>", True, id="draft_in_think_answer_after"),
    pytest.param("7", "<think>Answer: 7</think>", False, id="nothing_after_think"),
])
def test_think(gold, response, expected):
    assert verify_math(response, gold) is expected


# ---------------------------------------------------------------- reward hacking stays out

@pytest.mark.parametrize("gold, response", _cases(
    ("list_of_candidates", "12", "\\boxed{10, 11, 12}"),
    ("the_variable_itself", "12", "\\boxed{n}"),
    ("relation_without_answer_side", "12", "\\boxed{n = }"),
    ("boxes_joined_by_or", "12", "It is \\boxed{11} or \\boxed{12}."),
    ("boxes_side_by_side", "7", "\\boxed{3} \\boxed{5} \\boxed{7}"),
    ("two_answers_in_the_answer_block", "7", "<answer>\\boxed{3} then \\boxed{7}</answer>"),
    ("restated_question", "12", "Find $n$ if $3n = 36$."),
))
def test_hacks_are_wrong(gold, response):
    assert not verify_math(response, gold)


@pytest.mark.parametrize("gold, response", _cases(
    ("corrected_box_last_counts", "12", "I first wrote \\boxed{11}, but I miscounted. The answer is \\boxed{12}."),
    ("same_answer_boxed_twice_differently", "\\frac12", "so \\boxed{0.5}. Final: \\boxed{\\frac12}"),
    ("assignment_names_the_value", "12", "\\boxed{n = 12}"),
))
def test_honest_answers_are_right(gold, response):
    assert verify_math(response, gold)
