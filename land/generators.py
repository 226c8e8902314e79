"""Synthetic task examples, each drawn from a seeded `random.Random`: (input fields, gold completion).

Every rule is deterministic given the inputs (the label follows from the text), so a model can
learn it and a test can check it. Completions start with a space: they follow the cue's colon.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from land import vocab

Example = tuple[dict[str, str], str]
Generator = Callable[[random.Random], Example]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(vocab.FIRST_NAMES)} {rng.choice(vocab.LAST_NAMES)}"


def _review(rng: random.Random, num_positive: int, num_negative: int) -> str:
    """Clauses 'the <noun> was <adjective>', one per sentiment word, plus maybe a neutral one."""
    adjectives = [rng.choice(vocab.POSITIVE_WORDS) for _ in range(num_positive)]
    adjectives += [rng.choice(vocab.NEGATIVE_WORDS) for _ in range(num_negative)]
    if rng.random() < 0.5:
        adjectives.append(rng.choice(vocab.NEUTRAL_WORDS))
    rng.shuffle(adjectives)
    nouns = rng.sample(vocab.REVIEW_NOUNS, len(adjectives))
    clauses = [f"the {noun} was {adjective}" for noun, adjective in zip(nouns, adjectives, strict=True)]
    text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return text[0].upper() + text[1:] + "."


def sentiment(rng: random.Random) -> Example:
    """positive or negative: whichever lexicon has more words in the review (never a tie)."""
    majority = rng.choice((1, 2, 2, 3))
    minority = rng.randint(0, majority - 1)
    label = rng.choice(("positive", "negative"))
    num_positive, num_negative = (majority, minority) if label == "positive" else (minority, majority)
    return {"review": _review(rng, num_positive, num_negative)}, f" {label}"


def rating(rng: random.Random) -> Example:
    """Stars = 3 + positive words - negative words, clamped to 1..5."""
    num_positive, num_negative = rng.randint(0, 3), rng.randint(0, 3)
    if num_positive + num_negative == 0:
        num_positive = 1
    stars = min(5, max(1, 3 + num_positive - num_negative))
    return {"review": _review(rng, num_positive, num_negative)}, f" {stars}"


def topic(rng: random.Random) -> Example:
    """The topic two keywords of a headline share (a third keyword may come from another topic)."""
    label = rng.choice(tuple(vocab.TOPIC_WORDS))
    keywords = rng.sample(vocab.TOPIC_WORDS[label], 2)
    if rng.random() < 0.5:
        other = rng.choice([t for t in vocab.TOPIC_WORDS if t != label])
        keywords.append(rng.choice(vocab.TOPIC_WORDS[other]))
    rng.shuffle(keywords)
    subject = rng.choice((_person(rng), f"The {keywords[0]}"))
    rest = " and the ".join(keywords[1:] if subject.startswith("The ") else keywords)
    headline = f"{subject} {rng.choice(vocab.FILLER_VERBS)} the {rest} in {rng.choice(vocab.CITIES)}"
    return {"headline": headline}, f" {label}"


def arithmetic(rng: random.Random) -> Example:
    """A one-step word problem; the completion shows the sum, the last number is the answer."""
    name, item = rng.choice(vocab.FIRST_NAMES), rng.choice(vocab.ITEMS)
    if rng.random() < 0.5:
        a, b = rng.randint(1, 12), rng.randint(1, 8)
        question = f"{name} has {a} {item}. {name} buys {b} more. How many {item} does {name} have now?"
        return {"question": question}, f" {a} + {b} = {a + b}"
    a = rng.randint(2, 20)
    b = rng.randint(1, min(a - 1, 9))
    question = f"{name} has {a} {item} and gives {b} to a friend. How many {item} are left?"
    return {"question": question}, f" {a} - {b} = {a - b}"


def data_to_text(rng: random.Random) -> Example:
    """A restaurant's attributes (E2E-style meaning representation) → one fixed-pattern sentence."""
    name = rng.choice(vocab.RESTAURANTS)
    attributes = {
        "food": rng.choice(vocab.FOODS),
        "area": rng.choice(vocab.AREAS),
        "price": rng.choice(vocab.PRICES),
    }
    kept = [key for key in attributes if rng.random() < 0.7] or [rng.choice(tuple(attributes))]
    shown = {key: attributes[key] for key in kept}
    meaning = ", ".join([f"name[{name}]"] + [f"{key}[{value}]" for key, value in shown.items()])
    kind = " ".join(v for v in (shown.get("price"), shown.get("food")) if v)
    article = "an" if kind and kind[0].lower() in "aeiou" else "a"
    sentence = f"{name} is {article} {kind + ' ' if kind else ''}restaurant"
    if "area" in shown:
        sentence += f" in the {shown['area']}"
    return {"meaning": meaning}, f" {sentence}."


_ENTITY_SENTENCES = (
    "Yesterday {person} visited the {noun} in {city} with a friend.",
    "In {city}, {person} opened a new {noun} near the station.",
    "The team met {person} at the {noun} of {city}.",
    "{person} wrote a letter about the {noun} from {city}.",
    "A friend of {person} found the old {noun} in {city}.",
)


def entities(rng: random.Random) -> Example:
    """The person and the city a sentence mentions, in a fixed `person: …; city: …` form."""
    person, city = _person(rng), rng.choice(vocab.CITIES)
    text = rng.choice(_ENTITY_SENTENCES).format(person=person, city=city, noun=rng.choice(vocab.REVIEW_NOUNS))
    return {"sentence": text}, f" person: {person}; city: {city}"
