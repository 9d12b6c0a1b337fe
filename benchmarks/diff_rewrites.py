"""The rewrite rules of benchmarks/diff_rewards.py: each turns gold answers into labelled answer pairs.

One function per category of issue 14; each returns cases {kind, gold, answer | response, label,
why, topic, source}. A rewrite either keeps the answer (label true: another spelling, another
place in the text) or changes it (label false: a near miss, a hedge, the answer in the wrong
place), and `why` says which, in one line.
"""
from __future__ import annotations

import random
import re
from fractions import Fraction

LETTERS = "ABCD"


def rational(text: str) -> Fraction | None:
    """The value of an integer, decimal or \\frac{a}{b} gold, else None."""
    text = text.strip()
    match = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", text)
    if match and int(match.group(3)):
        value = Fraction(int(match.group(2)), int(match.group(3)))
        return -value if match.group(1) else value
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return Fraction(text)
    return None


def decimal(value: float, digits: int) -> str:
    """`value` rounded to `digits` significant digits, in plain notation."""
    return f"{float(f'{value:.{digits}g}'):.12g}" if abs(value) < 1e12 else f"{value:.{digits}g}"


def thousands(value: Fraction) -> str | None:
    """An exact decimal with thousands separators, "2,500.75" (None when it has no finite form)."""
    if value.denominator not in (1, 2, 4, 5, 8, 10, 20, 25, 50, 100):
        return None
    whole = int(abs(value))
    rest = abs(value) - whole
    text = f"{whole:,}" + (f"{float(rest):.4f}".rstrip("0")[1:] if rest else "")
    return ("-" if value < 0 else "") + text


def wrong(gold: str, rng: random.Random) -> str:
    """A near miss: the last digit of the gold changed (or "+1" appended when it has none)."""
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    if not digits:
        return gold + "+1"
    i = rng.choice(digits[-2:])
    return gold[:i] + str((int(gold[i]) + rng.randint(1, 8)) % 10) + gold[i + 1:]


def irrational_value(gold: str) -> float | None:
    """The float value of a constant gold with a radical or pi (for \\approx annotations)."""
    if not re.search(r"\\sqrt|\\pi", gold) or re.search(r"[a-zA-Z](?<!\\[a-z])", re.sub(r"\\[a-z]+", "", gold)):
        return None
    from grpo.rewards.latex import normalize
    from grpo.rewards.parse import parse
    from grpo.rewards.values import numeric

    try:
        value = numeric(parse(normalize(gold).text), {})
    except Exception:  # not a scalar we can evaluate: no annotation for it
        return None
    return value.real if abs(value.imag) < 1e-12 and value.real != 0 else None




def _case(kind: str, gold, label: bool, why: str, topic: str, source: str, answer: str | None = None,
          response: str | None = None) -> dict:
    case = {"topic": topic, "kind": kind, "gold": gold}
    case.update({"answer": answer} if response is None else {"response": response})
    case.update({"label": label, "why": why, "source": source})
    return case


def _simple(golds, rng, count, limit=40):
    """`count` golds short enough for prose (no text, lists or environments)."""
    pool = [g for g in golds if len(g[2]) <= limit and not re.search(r"\\text|\\begin|,|=|\\\\|<|>|\\in|\\cup", g[2])]
    return rng.sample(pool, min(count, len(pool)))


def _numeric(golds, rng, count, keep=lambda v: True):
    pool = [(s, p, g, rational(g)) for s, p, g in golds if rational(g) is not None and keep(rational(g))]
    return rng.sample(pool, min(count, len(pool)))


def free_text(golds, rng):
    out = []
    shapes = [
        ("Answer ${}$", "Answer $..$: no colon, no box"),
        ("So we get \\[ {} \\]", "display math \\[..\\] ends the text"),
        ("Thus \\( {} \\).", "inline \\(..\\) ends the text"),
        ("Putting it together,\n$$\n{}\n$$", "$$..$$ across line breaks"),
        ("Hence ${}$ is the value we want.", "the last $..$ of the final sentence"),
        ("First we find $k = 3$ and simplify.\nThe result is ${}$.", "the last sentence's math, not an earlier one"),
        ("So we obtain ${}$.\nLet me double-check with $n = 2$: it works.", "a check after the answer sets up, states nothing"),
        ("We get ${}$. Could it be ${}$? No, that fails.", "a question after the answer asks, states nothing"),
    ]
    for source, _, gold in _simple(golds, rng, 60):
        bad = wrong(gold, rng)
        text, why = rng.choice(shapes)
        out.append(_case("math", gold, True, f"{why}: the gold", "prose_math", source, response=text.format(gold, bad)))
        text, why = rng.choice(shapes)
        out.append(_case("math", gold, False, f"{why}: a near miss ({bad})", "prose_math", source,
                         response=text.format(bad, gold)))
    for source, _, gold, value in _numeric(golds, rng, 30, lambda v: thousands(v) is not None):
        spelled = thousands(value)
        out.append(_case("math", gold, True, "the last number of the prose, separators and all", "prose_number",
                         source, response=rng.choice([f"Adding the parts, so the total is {spelled}",
                                                      f"The total is \\${spelled} in all."])))
        if rng.random() < 0.5:
            out.append(_case("math", gold, True, "a value after 'about' annotates the answer before it", "prose_number",
                             source, response=f"So it is ${gold}$, about ${float(value) * 1.001:.1f}$."))
        out.append(_case("math", gold, False, "two candidates joined by 'or' state no single answer", "prose_hedge",
                         source, response=f"It is either ${wrong(gold, rng)}$ or ${gold}$."))
    return out


def think(golds, rng):
    out = []
    for source, _, gold in _simple(golds, rng, 50):
        bad = wrong(gold, rng)
        out += [
            _case("math", gold, True, "the answer after </think> counts, not the draft inside", "after_think", source,
                  response=f"<think>Maybe \\boxed{{{bad}}}? No, recheck.</think>\nThe answer is ${gold}$."),
            _case("math", gold, False, "inside <think> only; the text after it says something else", "inside_think",
                  source, response=f"<think>So \\boxed{{{gold}}}.</think>\nThe final answer is ${bad}$."),
        ]
        if rng.random() < 0.5:
            out += [
                _case("math", gold, True, "answer block after the thought", "after_think", source,
                      response=f"<think>try {bad} first</think>\n<answer>\\boxed{{{gold}}}</answer>"),
                _case("math", gold, False, "boxed inside the thought, another answer after it", "inside_think",
                      source, response=f"<think>Answer: {gold}</think>\nWait, so it is \\boxed{{{bad}}}."),
            ]
    return out


def numbers_units(golds, rng):
    out = []
    big = _numeric(golds, rng, 60, lambda v: abs(v) >= 1000 and thousands(v) is not None)
    small = _numeric(golds, rng, 30, lambda v: v.denominator > 1 and thousands(v) is not None)
    shapes = [("{}", "thousands separators"), ("\\${}", "a dollar sign"), ("{}€", "a euro sign"),
              ("{} km²", "a unit with a superscript"), ("{}\\text{{ dollars}}", "a unit word"), ("\\$ {}", "dollars")]
    for source, _, gold, value in big + small:
        if value.denominator == 1 and rng.random() < 0.6:  # separators together with a decimal part
            value = value + Fraction(rng.choice([1, 3, 7]), 4)
            gold = str(float(value)).rstrip("0").rstrip(".")
        text, why = rng.choice(shapes)
        out.append(_case("math", gold, True, f"{why}: the same number", "separators_units", source,
                         answer=text.format(thousands(value))))
        bad_value = value + rng.choice([Fraction(1, 4), Fraction(1), Fraction(-1, 100) if value.denominator > 1 else -1])
        text, why = rng.choice(shapes)
        out.append(_case("math", gold, False, f"{why}: a different number ({thousands(bad_value)})", "separators_units",
                         source, answer=text.format(thousands(bad_value))))
    # percentages: the few percent golds of the data, and integer golds under 100 read as percentages
    percents = [(s, g.replace(" ", "")) for s, _, g in golds if re.fullmatch(r"\d+(?:\.\d+)?\s*\\?%", g)]
    percents += [(s + " (as a percentage)", f"{v}\\%") for s, _, g, v in _numeric(golds, rng, 12, lambda v: v.denominator == 1 and 0 < v < 100)]
    for source, gold in percents:
        number = gold.rstrip("%").rstrip("\\")
        for word in ("percent", "pct", "%"):
            out.append(_case("math", gold, True, f"'{word}' is the percent sign", "percent_words", source,
                             answer=f"{number} {word}"))
        out.append(_case("math", gold, False, "another percentage", "percent_words", source,
                         answer=f"{wrong(number, rng)} percent"))
        out.append(_case("math", gold, False, "a percentage of another number", "percent_words", source,
                         answer=f"{wrong(number, rng)} pct"))
    return out


def _latex(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def relations(golds, rng):
    out = []
    for source, _, gold, value in _numeric(golds, rng, 25, lambda v: v.denominator == 1 and 2 < abs(v) < 10**6):
        v = int(value)
        a = rng.randint(1, abs(v) - 1) * (1 if v > 0 else -1)
        b = v - a
        out += [
            _case("math", gold, True, "an = chain states its last side", "chain", source, answer=f"y = {a} + {b} = {v}"),
            _case("math", f"y = {gold}", True, "the same name, the chain's last side", "chain", source,
                  answer=f"y = {a}+{b} = {v}"),
            _case("math", gold, False, "the chain's last side is another number", "chain", source,
                  answer=f"y = {a} + {b} = {v + 1}"),
            _case("math", gold, False, "a false middle side: the chain contradicts itself", "chain", source,
                  answer=f"y = {a} + {b + 1} = {v}"),
        ]
    for source, _, gold, value in _numeric(golds, rng, 25, lambda v: abs(v) < 10**6):
        bound = _latex(value)
        negated = _latex(-value)
        double = _latex(2 * value)
        op, flipped, strict = rng.choice([(">", "<", True), ("\\ge", "\\le", False), ("<", ">", True), ("\\le", "\\ge", False)])
        rel = f"x {op} {bound}"
        other_closed = {">": "\\geq", "<": "\\leq", "\\ge": ">", "\\le": "<"}[op]
        out += [
            _case("math", rel, True, "the same inequality negated on both sides", "inequality", source,
                  answer=f"-x {flipped} {negated}"),
            _case("math", rel, True, "the same inequality written the other way round", "inequality", source,
                  answer=f"{bound} {flipped} x"),
            _case("math", rel, True, "the same inequality times 2", "inequality", source, answer=f"2x {op} {double}"),
            _case("math", rel, False, "strict against non-strict" if strict else "non-strict against strict",
                  "inequality", source, answer=f"x {other_closed} {bound}"),
            _case("math", rel, False, "the opposite direction", "inequality", source, answer=f"-x {op} {negated}"),
            _case("math", rel, False, "another variable", "inequality", source, answer=f"y {op} {bound}"),
        ]
        if rng.random() < 0.4:
            out += [
                _case("math", f"x \\neq {bound}", True, "!= spelled differently", "not_equal", source,
                      answer=f"x != {bound}"),
                _case("math", f"x \\ne {bound}", True, "x != a is the union of two open rays", "not_equal", source,
                      answer=f"(-\\infty, {bound}) \\cup ({bound}, \\infty)"),
                _case("math", f"x \\neq {bound}", False, "= is not !=", "not_equal", source, answer=f"x = {bound}"),
            ]
    irrational = [(s, g, irrational_value(g)) for s, _, g in golds if len(g) < 40 and "=" not in g and "," not in g]
    irrational = [c for c in irrational if c[2] is not None]
    for source, gold, value in rng.sample(irrational, min(40, len(irrational))):
        out += [
            _case("math", gold, True, "an exact answer annotated with a fair rounding", "approx", source,
                  answer=f"{gold} \\approx {decimal(value, 3)}"),
            _case("math", gold, False, "the annotation contradicts the exact value", "approx", source,
                  answer=f"{gold} \\approx {decimal(value * 1.2 + 1, 3)}"),
            _case("math", gold, rng.random() < 0.5, "", "approx_decimal", source),
        ]
        digits = 6 if out[-1]["label"] else 3
        out[-1].update(answer=decimal(value, digits), why=f"a decimal of {digits} significant digits "
                       + ("(within one unit of its last digit)" if digits >= 5 else "is too few to stand for it"))
    return out


def _matrix(rows: list[list[str]], env: str = "pmatrix") -> str:
    body = " \\\\ ".join(" & ".join(r) for r in rows)
    if env == "array":
        return f"\\left[\\begin{{array}}{{{'c' * len(rows[0])}}} {body} \\end{{array}}\\right]"
    return f"\\begin{{{env}}} {body} \\end{{{env}}}"


def matrices(golds, rng):
    out = []
    fractions = [v for _, _, g, v in _numeric(golds, rng, 400, lambda v: v.denominator in (3, 6, 7, 9, 11, 12) and abs(v) < 100)]
    integers = [v for _, _, g, v in _numeric(golds, rng, 400, lambda v: v.denominator == 1 and abs(v) < 100)]
    for k in range(45):
        shape = rng.choice([(2, 2), (2, 1), (3, 1), (1, 2)])
        values = [[rng.choice(fractions if rng.random() < 0.4 else integers) for _ in range(shape[1])] for _ in range(shape[0])]
        exact = [[_latex(v) for v in row] for row in values]
        gold = _matrix(exact)
        env = rng.choice(["bmatrix", "array", "pmatrix"])
        dfrac = [[e.replace("\\frac", "\\dfrac") for e in row] for row in exact]
        out.append(_case("math", gold, True, f"{env} against pmatrix, same entries", "brackets", "synthetic from golds",
                         answer=_matrix(dfrac, env)))
        decimals = [[decimal(float(v), 6) if v.denominator > 1 else str(v) for v in row] for row in values]
        if any(v.denominator > 1 for row in values for v in row):
            out.append(_case("math", gold, True, "entries as 6-digit decimals (within one unit)", "decimal_entries",
                             "synthetic from golds", answer=_matrix(decimals, env)))
            rough = [[decimal(float(v), 3) if v.denominator > 1 else str(v) for v in row] for row in values]
            out.append(_case("math", gold, False, "3-digit decimals: too few to stand for exact entries",
                             "decimal_entries", "synthetic from golds", answer=_matrix(rough, env)))
        changed = [row[:] for row in exact]
        r, c = rng.randrange(shape[0]), rng.randrange(shape[1])
        changed[r][c] = _latex(values[r][c] + 1)
        out.append(_case("math", gold, False, "one entry differs", "entries", "synthetic from golds",
                         answer=_matrix(changed, env)))
        if shape == (2, 2) and exact[0][1] != exact[1][0]:
            out.append(_case("math", gold, False, "the transpose", "entries", "synthetic from golds",
                             answer=_matrix([list(col) for col in zip(*exact)], env)))
        if shape[1] == 1:
            out.append(_case("math", gold, True, "a column vector as the tuple of its entries", "vector_tuple",
                             "synthetic from golds", answer="(" + ", ".join(r[0] for r in exact) + ")"))
    return out


def real_matrices(golds, rng):
    """The pmatrix golds of the data sets, in other environments and with one entry changed."""
    out = []
    for source, _, gold in golds:
        if not gold.startswith("\\begin{pmatrix}"):
            continue
        env = rng.choice(["bmatrix", "array"])
        body = gold[len("\\begin{pmatrix}"):-len("\\end{pmatrix}")]
        width = body.split("\\\\")[0].count("&") + 1
        other = (f"\\left[\\begin{{array}}{{{'c' * width}}}{body}\\end{{array}}\\right]" if env == "array"
                 else f"\\begin{{bmatrix}}{body}\\end{{bmatrix}}")
        out.append(_case("math", gold, True, f"{env} against pmatrix, same entries", "brackets", source, answer=other))
        out.append(_case("math", gold, False, "one entry differs", "entries", source, answer=wrong(gold, rng)))
    return out


def intervals(golds, rng):
    out = []
    pool = [v for _, _, _, v in _numeric(golds, rng, 600, lambda v: v.denominator in (3, 6, 7, 9, 11) and abs(v) < 50)]
    for k in range(45):
        low, high = sorted(rng.sample(pool, 2))
        if low == high:
            continue
        opening, closing = rng.choice("(["), rng.choice(")]")
        gold = f"{opening}{_latex(low)}, {_latex(high)}{closing}"
        fine = f"{opening}{decimal(float(low), 6)}, {decimal(float(high), 5)}{closing}"
        rough = f"{opening}{decimal(float(low), 2)}, {decimal(float(high), 3)}{closing}"
        flipped = {"(": "[", "[": "("}[opening] + gold[1:]
        out += [
            _case("math", gold, True, "ends as decimals of 5+ digits, each within one unit", "decimal_ends",
                  "synthetic from golds", answer=fine),
            _case("math", gold, False, "ends rounded to 2-3 digits: not the exact ends", "decimal_ends",
                  "synthetic from golds", answer=rough),
            _case("math", gold, False, "the other bracket on the left end", "brackets", "synthetic from golds",
                  answer=flipped),
        ]
        op_low = "\\le" if opening == "[" else "<"
        op_high = "\\le" if closing == "]" else "<"
        out.append(_case("math", gold, True, "the interval as a chain of inequalities", "as_inequality",
                         "synthetic from golds", answer=f"{_latex(low)} {op_low} x {op_high} {_latex(high)}"))
    for source, _, gold in golds:  # the interval golds of the data sets
        if re.fullmatch(r"(?:x \\in )?(?:\\left)?[(\[].*,.*(?:\\right)?[)\]]", gold) and "\\cup" not in gold and "pmatrix" not in gold:
            out.append(_case("math", gold, True, "\\left \\right and spaces", "brackets", source,
                             answer=gold.replace("(", "\\left( ").replace(")", " \\right)") if "\\left" not in gold else gold.replace("\\left", "").replace("\\right", "")))
            out.append(_case("math", gold, False, "an end changed", "decimal_ends", source, answer=wrong(gold, rng)))
    return out


def latex_artifacts(golds, rng):
    out = []
    shapes = [("{}\\", "a stray trailing backslash"), ("{}\\\\", "a trailing row break"),
              ("\\displaystyle {}", "\\displaystyle"), ("\\;{}\\;", "spacing commands"), ("{}\\,", "a trailing thin space"),
              ("\\mathrm{{{}}}", "\\mathrm around the answer")]
    for source, _, gold in _simple(golds, rng, 70):
        text, why = rng.choice(shapes)
        variant = gold.replace("\\frac", rng.choice(["\\tfrac", "\\dfrac"])) if "\\frac" in gold else gold
        if re.fullmatch(r"\d{4,}", gold):
            variant = f"{int(gold):,}".replace(",", rng.choice([",\\!", "{,}", "\\,"]))
        out.append(_case("math", gold, True, f"{why}; {variant != gold and 'separators/frac variants' or 'no other change'}",
                         "artifacts", source, answer=text.format(variant)))
        text, why = rng.choice(shapes)
        out.append(_case("math", gold, False, f"{why} around a near miss", "artifacts", source,
                         answer=text.format(wrong(variant, rng))))
    for letter in "ABCDE":
        other = "ABCDE"[("ABCDE".index(letter) + 2) % 5]
        out.append(_case("math", f"\\text{{({letter})}}", True, "\\mathrm{E} and E are the same letter", "letters",
                         "MATH choice answers", answer=f"\\mathrm{{{letter}}}"))
        out.append(_case("math", f"\\text{{({letter})}}", False, "another letter", "letters", "MATH choice answers",
                         answer=f"\\mathrm{{{other}}}"))
    return out


def choice(golds, rng):
    out = []
    numeric = [g for _, _, g, v in _numeric(golds, rng, 800, lambda v: abs(v) < 10**5)]
    for k in range(40):
        options = list(dict.fromkeys(rng.sample(numeric, 6)))[:4]
        if len(options) < 4:
            continue
        texts = [f"{o} units" for o in options]
        gold_index = rng.randrange(4)
        letter = LETTERS[gold_index]
        other = LETTERS[(gold_index + rng.randint(1, 3)) % 4]
        gold = {"answer": letter, "options": texts}
        right = [
            (f"Comparing the options, \\boxed{{{letter}}}", "\\boxed{letter}"),
            (f"so it must be ({letter}).", "a parenthesised letter ends the text"),
            (f"Working through it...\nAnswer: {letter}", "simple-evals' 'Answer: LETTER' line"),
            (f"Therefore the correct option is {letter}.", "'the correct option is'"),
            (f"The answer is ${texts[gold_index].split()[0]}$ units.", "the option's text"),
            (f"**Answer: ({letter}) {texts[gold_index]}**", "letter with its option text"),
        ]
        wrong_forms = [
            (f"Comparing the options, \\boxed{{{other}}}", "another letter, boxed"),
            (f"Answer: {other}", "another letter"),
            (f"It is {letter} or {other}.", "two letters: a hedge"),
            (f"\\boxed{{{letter}, {other}}}", "two letters in one box"),
            (f"<think>Answer: {letter}</think>\nThe correct option is {other}.", "the gold letter only inside <think>"),
            (f"The answer is ${texts[(gold_index + 1) % 4].split()[0]}$ units.", "another option's text"),
        ]
        for response, why in rng.sample(right, 2):
            out.append(_case("choice", gold, True, why, "letter", "synthetic options from golds", response=response))
        for response, why in rng.sample(wrong_forms, 2):
            out.append(_case("choice", gold, False, why, "letter", "synthetic options from golds", response=response))
    return out


def hacking(golds, rng):
    out = []
    for source, problem, gold in _simple(golds, rng, 60):
        bad = wrong(gold, rng)
        hacks = [
            (f"\\boxed{{{bad}, {gold}}}", "a list of candidates is not one answer"),
            ("\\boxed{x}", "the variable, not its value"),
            (f"\\boxed{{{bad}}} \\boxed{{{gold}}}", "several different boxed answers: a hedge"),
            (f"\\boxed{{{bad}}} or \\boxed{{{gold}}}", "two boxed alternatives"),
            ("\\boxed{x = }", "a relation whose answer side is missing"),
            (problem, "the question restated, no answer given"),
            (f"Let $n = {gold}$.", "a setup sentence assigns, it does not answer"),
        ]
        value = rational(gold)
        if value is not None and value.denominator == 1 and abs(value) > 2:
            a = int(value) // 2
            hacks.append((f"Compute ${a} + {int(value) - a}$.", "the question's computation restated, not done"))
        honest = [
            (f"\\boxed{{{gold}}}. So the final answer is \\boxed{{{gold}}}.", "the same answer boxed twice"),
            (f"\\boxed{{x = {gold}}}", "x = value names the value"),
            (f"<think>maybe \\boxed{{{bad}}}</think>\n<answer>\\boxed{{{gold}}}</answer>", "a draft in the thought, one answer after it"),
        ]
        response, why = rng.choice(hacks)
        out.append(_case("math", gold, False, why, "hack", source, response=response))
        response, why = rng.choice(honest)
        out.append(_case("math", gold, True, why, "honest", source, response=response))
    return out


CATEGORIES = {
    "free_text": free_text,
    "think": think,
    "numbers_units": numbers_units,
    "relations": relations,
    "matrices": lambda golds, rng: matrices(golds, rng) + real_matrices(golds, rng),
    "intervals": intervals,
    "latex_artifacts": latex_artifacts,
    "choice": choice,
    "hacking": hacking,
}
