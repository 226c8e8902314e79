"""Generic synthetic text the tiny base is pretrained on: the tasks' words, none of their formats.

Plain narrative sentences over `vocab` — people travelling between cities, meals and how they
went, news of ministers and matches, counting and sums — so the base knows this small world as
a real base knows ours: the words, that a name mentioned once tends to come back, that rude
staff make a negative evening, that a striker is sports news, that 3 + 4 = 7. It has seen
quizzes too ("Q: Where does Maria Lopez live? A: Oslo."), so it can answer a question put in a
form it knows. It never sees the tasks' instructions, `###` sections, cues, label sets or
meaning representations: mapping a task's prompt to its answer is what the adapter learns.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from land import vocab

Sentence = Callable[[random.Random], str]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(vocab.FIRST_NAMES)} {rng.choice(vocab.LAST_NAMES)}"


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(vocab.COMMON_WORDS) for _ in range(count))


def _trip(rng: random.Random) -> str:
    person, a, b = _person(rng), rng.choice(vocab.CITIES), rng.choice(vocab.CITIES)
    return f"{person} {rng.choice(('went', 'walked', 'came'))} from {a} to {b}, and {person} stayed in {b} for a week."


def _meeting(rng: random.Random) -> str:
    a, b, city = _person(rng), _person(rng), rng.choice(vocab.CITIES)
    return f"In {city} {a} met {b} at the {rng.choice(vocab.REVIEW_NOUNS)}, then {b} called {a} again."


def _meal(rng: random.Random) -> str:
    """A visit in a few clauses; how it went follows the majority of its opinion words."""
    num_positive, num_negative = rng.randint(0, 3), rng.randint(0, 3)
    if num_positive == num_negative:
        num_positive += 1
    opinions = [rng.choice(vocab.POSITIVE_WORDS) for _ in range(num_positive)]
    opinions += [rng.choice(vocab.NEGATIVE_WORDS) for _ in range(num_negative)]
    rng.shuffle(opinions)
    nouns = rng.sample(vocab.REVIEW_NOUNS, len(opinions))
    clauses = ", ".join(f"the {noun} was {word}" for noun, word in zip(nouns, opinions, strict=True))
    name = rng.choice(vocab.FIRST_NAMES)
    if rng.random() < 0.5:
        verdict = "a positive" if num_positive > num_negative else "a negative"
        return f"At {rng.choice(vocab.RESTAURANTS)} {clauses}, so {name} had {verdict} evening."
    stars = min(5, max(1, 3 + num_positive - num_negative))
    return f"At {rng.choice(vocab.RESTAURANTS)} {clauses}, so {name} gave it {stars} stars."


def _restaurant(rng: random.Random) -> str:
    return (
        f"{rng.choice(vocab.RESTAURANTS)} serves {rng.choice(vocab.FOODS)} food in the {rng.choice(vocab.AREAS)}, "
        f"and it is {rng.choice(vocab.PRICES)}."
    )


def _home(rng: random.Random) -> str:
    person, city = _person(rng), rng.choice(vocab.CITIES)
    return f"{person} lives in {city}, and {person} works near the {rng.choice(vocab.REVIEW_NOUNS)} of {city}."


def _news(rng: random.Random) -> str:
    area = rng.choice(tuple(vocab.TOPIC_WORDS))
    a, b = rng.sample(vocab.TOPIC_WORDS[area], 2)
    return (
        f"The {a} {rng.choice(vocab.FILLER_VERBS)} that the {b} in {rng.choice(vocab.CITIES)} is big news for {area}."
    )


def _sum(rng: random.Random) -> str:
    a, b = rng.randint(0, 12), rng.randint(0, 9)
    if rng.random() < 0.5:
        return f"We know that {a} + {b} = {a + b} and that {a + b} - {b} = {a}."
    return f"It is true that {b} + {a} = {a + b}."


def _story(rng: random.Random) -> str:
    """Counting in a story: a name, some items, more or fewer of them."""
    name, item = rng.choice(vocab.FIRST_NAMES), rng.choice(vocab.ITEMS)
    a, b = rng.randint(2, 20), rng.randint(1, 9)
    if b < a and rng.random() < 0.5:
        return f"{name} had {a} {item} and gave {b} away, so {name} kept {a - b} {item}."
    return f"{name} had {a} {item} and got {b} more, so {name} had {a + b} {item}."


def _question(rng: random.Random) -> str:
    """A fact, then a question about it answered after "A:" (a quiz, not any task's format)."""
    kind = rng.randrange(4)
    if kind == 0:
        person, city = _person(rng), rng.choice(vocab.CITIES)
        return f"{person} lives in {city}. Q: Where does {person} live? A: {city}."
    if kind == 1:
        name, item, a, b = rng.choice(vocab.FIRST_NAMES), rng.choice(vocab.ITEMS), rng.randint(1, 12), rng.randint(1, 8)
        return f"{name} had {a} {item} and got {b} more. Q: How many {item} now? A: {a + b}."
    if kind == 2:
        area = rng.choice(tuple(vocab.TOPIC_WORDS))
        a, b = rng.sample(vocab.TOPIC_WORDS[area], 2)
        return f"Everyone talks about the {a} and the {b}. Q: What kind of news is it? A: {area} news."
    good = rng.random() < 0.5
    word = rng.choice(vocab.POSITIVE_WORDS if good else vocab.NEGATIVE_WORDS)
    return f"The {rng.choice(vocab.REVIEW_NOUNS)} was {word}. Q: Was it good or bad? A: {'good' if good else 'bad'}."


def _plain(rng: random.Random) -> str:
    return f"{_person(rng)} {_words(rng, rng.randint(4, 10))}."


SENTENCES: tuple[Sentence, ...] = (
    _trip,
    _meeting,
    _home,
    _meal,
    _restaurant,
    _news,
    _sum,
    _story,
    _question,
    _plain,
)


def corpus_lines(num_lines: int, seed: int) -> Iterator[str]:
    """`num_lines` paragraphs of 3-6 sentences each, deterministic for a seed."""
    rng = random.Random(f"lorastream-land-corpus/{seed}")
    for _ in range(num_lines):
        yield " ".join(rng.choice(SENTENCES)(rng) for _ in range(rng.randint(3, 6)))
