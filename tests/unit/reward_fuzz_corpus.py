"""Random and adversarial strings for fuzzing the answer checkers (used by test_rewards_fuzz.py).

Three families, all deterministic from a seed:
- token soup: random sequences of the LaTeX and tag fragments that checkers parse;
- mutations: real answers (shared data ground truths when present) with characters inserted,
  deleted or duplicated, wrapped the way models write them;
- adversarial: inputs known to hang or explode naive checkers (towers of powers, huge
  factorials, deep nesting, thousands of tags, numbers beyond a float).
"""
from __future__ import annotations

import random

TOKENS = [
    "0", "1", "2", "3", "7", "9", "10", "42", "0.5", ".25", "1e5", "x", "y", "n", "e", "i", "a", "b",
    "+", "-", "*", "/", "^", "_", "=", "<", ">", "<=", ",", ";", ":", "!", "|", "'", ".", " ", "(", ")",
    "[", "]", "{", "}", "\\{", "\\}", "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[3]", "\\pi", "\\infty",
    "\\pm", "\\cdot", "\\times", "\\div", "\\le", "\\ge", "\\neq", "\\cup", "\\in", "\\left(", "\\right)",
    "\\left[", "\\right]", "\\text{", "\\mbox{", "\\mathrm{", "\\%", "%", "\\$", "$", "^\\circ", "\\!",
    "\\,", "\\\\", "&", "\\begin{pmatrix}", "\\end{pmatrix}", "\\binom", "\\log_", "\\ln", "\\sin",
    "\\cos^2", "\\overline{", "\\lfloor", "\\rfloor", "\\boxed{", "\\fbox{", "<answer>", "</answer>",
    "<think>", "</think>", "####", "answer is", "Answer:", "\n", "cm", "dollars", "\\emptyset", "oo",
    "9**9", "**", "//", "%", "__import__", "lambda", "\\sqrt2", "\\frac12", "_{10}", "\\approx",
]

ADVERSARIAL = [
    "9^{9^{9^9}}", "9**9**9**9", "\\boxed{9^{9^{9^{9}}}}", "10^{10^{10^{10}}}", "2^{2^{2^{2^{2^{2^{2}}}}}}",
    "x^{x^{x^{x^{x}}}}", "e^{e^{e^{e^{e^{10}}}}}", "1000000!", "(10^{100})!", "(10^{100})!!",
    "\\binom{10^{9}}{5 \\cdot 10^{8}}", "\\binom{10^{100}}{10^{50}}", "1e99999", "1e308 * 1e308",
    "10^{-10^{10}}", "\\sin(10^{300})", "\\tan(\\pi/2)", "0^0", "0^{-1}", "\\frac{1}{0}", "\\log 0",
    "\\ln(-1)", "\\sqrt{-1}", "(-8)^{1/3}", "0.\\overline{" + "9" * 500 + "}", "9" * 4000,
    "1" + "0" * 5000 + "/3", "(" * 500 + "1" + ")" * 500, "\\frac{" * 300 + "1" + "}{2}" * 300,
    "\\sqrt{" * 400 + "2" + "}" * 400, "|" * 301 + "x" + "|" * 301, "{" * 1000 + "}" * 1000,
    "\\boxed{" * 1000, "<answer>" * 3000 + "1", "</answer>" * 3000, "<think>" * 2000 + "</think>" * 2000,
    "\\boxed{1}" * 2000, "answer is " * 2000, "$" * 5000, "\\frac" * 2000, "^" * 3000, "-" * 3000 + "1",
    "1," * 3000, "x=" * 2000 + "1", "\\pm" * 500 + "1", "1\\pm " * 40 + "1", "\\{" * 500 + "\\}" * 500,
    "\\begin{pmatrix}" * 200 + "1" + "\\end{pmatrix}" * 200, "\\left(" * 300 + "x" + "\\right)" * 300,
    "(x+1)^{1000000}", "(x+y+z)^{200} - (z+y+x)^{200}", "\\prod_{k=1}^{10^9} k", "\\sum_{n=1}^{\\infty} n",
    "a" * 10000, "\\text{" * 500, "1.5" * 2000, "1/" * 2000 + "1", "\\sin" * 1000 + " x",
    "9^9^9^9^9^9^9", "((((((((((((((((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))))))))))))))))",
    "__import__('os').system('echo pwned')", "eval('1+1')", "\x00\x01\x02", "\ud83d\ude00" * 10, "\u202e123",
]


def token_soup(rng: random.Random, max_tokens: int = 40) -> str:
    return "".join(rng.choice(TOKENS) for _ in range(rng.randint(1, max_tokens)))


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(3)
        pos = rng.randrange(len(chars) + 1)
        if op == 0:
            chars.insert(pos, rng.choice("{}()[]^_\\-+/ ,.=$0123456789xi"))
        elif op == 1 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars.insert(pos, chars[min(pos, len(chars) - 1)])
    return "".join(chars)


def wrap(rng: random.Random, answer: str) -> str:
    """An answer placed the ways models write it."""
    return rng.choice([
        answer, f"\\boxed{{{answer}}}", f"<think>hmm</think><answer>{answer}</answer>",
        f"<think>x</think>\n<answer>\\boxed{{{answer}}}</answer>", f"The answer is ${answer}$.",
        f"#### {answer}", f"so \\boxed{{{answer}}} and \\boxed{{{answer}",
    ])


def corpus(seed: int, size: int, seeds: list[str]) -> list[str]:
    """`size` strings: every adversarial input (raw and wrapped), then soup and mutations of `seeds`."""
    rng = random.Random(seed)
    out = list(ADVERSARIAL) + [wrap(rng, a) for a in ADVERSARIAL]
    while len(out) < size:
        if rng.random() < 0.5:
            out.append(wrap(rng, token_soup(rng)))
        else:
            out.append(wrap(rng, mutate(rng, rng.choice(seeds))))
    return out[:max(size, len(ADVERSARIAL))]
