"""The built-in toy world: seeded GSM8K-format arithmetic word problems.

Each problem follows one person's stock of items through 2-4 operations (buy,
find, receive, give away, lose, sell, double, triple) and asks how many are left.
The worked solution states one operation per line as arithmetic (`12 + 5 = 17`) and
ends with `#### N`, like GSM8K.

The design point for AutoJudge: each reasoning line has two harmless choice points,
an opening ("So he has", "Now he has", "That leaves", ...) and an ending ("apples.",
"apples in total.", "apples now.", ...), each drawn with unequal weights that depend
on the kind of operation. The solutions come in two *styles* over the same problems:
style "a" (the target's training corpus and the reference answers everywhere) and
style "b" (the draft's training corpus), which prefers other phrasings of the same
set. So the pair disagrees on harmless wording at most choice points (unimportant
mismatches), as real target/draft pairs trained on different data do, and on numbers
where the draft's arithmetic fails (important ones). Numbers stay below 100 and
multiplication is by 2 or 3 only, so a tiny transformer can compute every step
reliably. Both styles draw the same random numbers, so a seed gives the same
questions and results in either style; only the wording differs.

Seeds used project-wide: 0 = model training data, 1 = mining, 2 = held-out
evaluation, 3 = quality bench.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PEOPLE: tuple[tuple[str, str], ...] = (
    ("Tom", "he"), ("Sam", "he"), ("Leo", "he"), ("Ben", "he"), ("Max", "he"),
    ("Jack", "he"), ("Noah", "he"), ("Omar", "he"), ("Mia", "she"), ("Ava", "she"),
    ("Zoe", "she"), ("Eva", "she"), ("Lily", "she"), ("Emma", "she"), ("Nina", "she"),
    ("Rosa", "she"),
)
ITEMS: tuple[str, ...] = (
    "apples", "marbles", "stickers", "cookies", "pencils", "cards", "books", "shells",
    "coins", "stamps",
)
MAX_VALUE = 99  # every number in a problem (operands and results) stays at or below this
MAX_PROBLEMS = 200_000
"""Most problems one call generates (a few seconds' work; the models' training corpus is 64,000
problems): a larger count is refused before any is built, instead of filling the memory."""


@dataclass(frozen=True)
class Step:
    """One operation applied to the running count."""

    kind: str  # "add", "sub" or "mul"
    sentence: str  # the question sentence that describes it
    operand: int  # the number added, subtracted, or multiplied by
    before: int  # the count before the operation
    after: int  # the count after it


# Question sentences per operation; {p} = name, {f} = a friend, {n} = operand, {i} = items.
ADD_SENTENCES = (
    "{p} buys {n} more {i}.",
    "{p} finds {n} more {i}.",
    "{f} gives {p} {n} {i}.",
)
SUB_SENTENCES = (
    "{p} gives {n} {i} to {f}.",
    "{p} loses {n} {i}.",
    "{p} sells {n} {i}.",
)
MUL_SENTENCES = {2: "{p} doubles the number of {i}.", 3: "{p} triples the number of {i}."}

# Equivalent openings of a solution line, with unequal style-"a" weights that depend on
# the operation kind: {P} = pronoun, {p} = name.
LINE_OPENINGS: dict[str, tuple[tuple[str, float], ...]] = {
    "add": (("So {P} has", 0.45), ("Now {P} has", 0.35), ("After that, {p} has", 0.20)),
    "sub": (("That leaves", 0.50), ("So {P} has", 0.30), ("Now {P} has", 0.20)),
    "mul": (("Now {P} has", 0.55), ("So {P} has", 0.25), ("That makes", 0.20)),
}
# Equivalent endings of a solution line (style-"a" weights by kind): {i} = items.
LINE_ENDINGS: dict[str, tuple[tuple[str, float], ...]] = {
    "add": (("{i} in total.", 0.50), ("{i}.", 0.30), ("{i} now.", 0.20)),
    "sub": (("{i} left.", 0.55), ("{i} now.", 0.25), ("{i}.", 0.20)),
    "mul": (("{i}.", 0.45), ("{i} in all.", 0.35), ("{i} now.", 0.20)),
}
START_OPENINGS: tuple[tuple[str, float], ...] = (
    ("{p} starts with {n} {i}.", 0.6),
    ("{p} has {n} {i} at first.", 0.4),
)
SYMBOLS = {"add": "+", "sub": "-", "mul": "*"}
STYLES = ("a", "b")  # "a": target corpus and reference answers; "b": the draft's corpus


def _weighted_choice(rng: random.Random, options: tuple[tuple[str, float], ...], style: str = "a") -> str:
    """Draw one phrasing from (text, weight) pairs.

    Style "b" rotates the weights one place (option j gets the weight of option j-1),
    so its favourite is style a's runner-up: every phrasing stays common in both styles,
    but the greedy choices differ. One `rng` draw either way.
    """
    texts = [text for text, _ in options]
    weights = [weight for _, weight in options]
    if style == "b":
        weights = weights[-1:] + weights[:-1]
    return rng.choices(texts, weights=weights, k=1)[0]


def _sample_step(rng: random.Random, count: int) -> Step:
    """Draw one operation valid for the current count (results stay in 1..MAX_VALUE)."""
    weights = {"add": 0.4 if count <= MAX_VALUE - 2 else 0.0, "sub": 0.4 if count > 2 else 0.0, "mul": 0.2 if count * 2 <= MAX_VALUE else 0.0}
    kind = rng.choices(list(weights), weights=list(weights.values()), k=1)[0]
    if kind == "add":
        operand = rng.randint(2, min(30, MAX_VALUE - count))
        return Step(kind, rng.choice(ADD_SENTENCES), operand, count, count + operand)
    if kind == "sub":
        operand = rng.randint(1, min(30, count - 1))
        return Step(kind, rng.choice(SUB_SENTENCES), operand, count, count - operand)
    factor = 3 if count * 3 <= MAX_VALUE and rng.random() < 0.4 else 2
    return Step(kind, MUL_SENTENCES[factor], factor, count, count * factor)


def _question(name: str, friend: str, items: str, start: int, steps: list[Step]) -> str:
    """The word problem text."""
    sentences = [f"{name} has {start} {items}."]
    for step in steps:
        sentences.append(step.sentence.format(p=name, f=friend, n=step.operand, i=items))
    sentences.append(f"How many {items} does {name} have now?")
    return " ".join(sentences)


def _solution(
    rng: random.Random, name: str, pronoun: str, items: str, start: int, steps: list[Step], style: str
) -> str:
    """The worked solution in `style`: one arithmetic line per step, ending with `#### N`."""
    lines = [_weighted_choice(rng, START_OPENINGS, style).format(p=name, n=start, i=items)]
    for step in steps:
        opening = _weighted_choice(rng, LINE_OPENINGS[step.kind], style).format(P=pronoun, p=name)
        ending = _weighted_choice(rng, LINE_ENDINGS[step.kind], style).format(i=items)
        symbol = SYMBOLS[step.kind]
        lines.append(f"{opening} {step.before} {symbol} {step.operand} = {step.after} {ending}")
    lines.append(f"#### {steps[-1].after}")
    return "\n".join(lines)


def generate_problem(rng: random.Random, problem_id: str, style: str = "a") -> dict:
    """One problem record `{"id", "question", "answer"}` drawn from `rng`, solution in `style`."""
    (name, pronoun), (friend, _) = rng.sample(PEOPLE, 2)
    items = rng.choice(ITEMS)
    start = rng.randint(3, 60)
    steps: list[Step] = []
    count = start
    for _ in range(rng.randint(2, 4)):
        step = _sample_step(rng, count)
        steps.append(step)
        count = step.after
    return {
        "id": problem_id,
        "question": _question(name, friend, items, start, steps),
        "answer": _solution(rng, name, pronoun, items, start, steps, style),
    }


def generate_problems(num: int, seed: int, style: str = "a") -> list[dict]:
    """`num` seeded problems with solutions in `style`; the first k of a stream do not
    depend on `num`, and questions and final answers do not depend on `style`."""
    if style not in STYLES:
        raise ValueError(f"unknown toy style {style!r}; expected one of {STYLES}")
    if num > MAX_PROBLEMS:
        from autojudge.errors import InputError

        raise InputError(f"the toy world generates at most {MAX_PROBLEMS:,} problems per seed, {num:,} were asked for")
    rng = random.Random(seed)
    return [generate_problem(rng, f"toy-{seed}-{index}", style) for index in range(num)]
