"""Generated corpora for tests and the demo: deterministic for a seed, learnable, named synthetic.

Each generator returns examples in the same shape as the file readers, so a task cannot tell
the difference except by the ``synthetic-*`` name the trial records.

- sentiment: short reviews whose label is the majority polarity of their opinion words.
- ner: template sentences with person, organisation, location and misc names (IOB2 tags).
- dialogue: personas of facts; the partner asks about one, the reply states it (20 candidates).
- text: the sentences of all three, for language modelling.
"""

from __future__ import annotations

import random

POSITIVE = ["great", "wonderful", "excellent", "superb", "delightful", "moving", "brilliant", "charming", "fun", "beautiful"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "clumsy", "painful", "weak", "tedious", "bland", "ugly"]
NOUNS = ["plot", "acting", "music", "script", "ending", "cast", "camera work", "dialogue", "pacing", "story"]
OPENERS = ["i watched this film last week .", "we saw it on a rainy sunday .", "this movie came out in may .",
           "my friend picked this one .", "i had no idea what to expect ."]
LINKS = ["the {n} was {a} .", "honestly the {n} felt {a} .", "i thought the {n} was {a} .", "and the {n} is {a} ."]

PEOPLE = ["Anna Smith", "John", "Maria Lopez", "Peter", "Wei Chen", "Olga", "Tom Baker", "Fatima"]
ORGS = ["Reuters", "Acme Corp", "the United Nations", "Siemens", "Blue Bank", "Oxfam"]
PLACES = ["Paris", "New York", "Berlin", "Lagos", "Tokyo", "Lima", "Cape Town"]
MISC = ["German", "French", "Olympic", "Nobel", "Italian"]
NER_TEMPLATES = [
    "{PER} met {PER} in {LOC} on monday .",
    "{ORG} said {PER} will visit {LOC} .",
    "the {MISC} team beat {ORG} in {LOC} .",
    "{PER} works for {ORG} .",
    "shares of {ORG} rose after the {MISC} report .",
    "{PER} flew from {LOC} to {LOC} .",
]

FACTS = {
    "pet": ("what pet do you have ?", "i have a {v} .", ["dog", "cat", "parrot", "fish", "rabbit", "horse"]),
    "color": ("what is your favorite color ?", "my favorite color is {v} .", ["blue", "red", "green", "yellow", "purple"]),
    "food": ("what do you like to eat ?", "i love to eat {v} .", ["pizza", "sushi", "tacos", "pasta", "salad", "soup"]),
    "job": ("what do you do for work ?", "i work as a {v} .", ["teacher", "nurse", "pilot", "chef", "farmer", "lawyer"]),
    "city": ("where do you live ?", "i live in {v} .", ["london", "madrid", "boston", "sydney", "toronto", "rome"]),
}
GREETINGS = ["hi there !", "hello , how are you ?", "hey !", "good evening !"]


def sentiment(n: int, seed: int = 0) -> list[dict]:
    """Reviews with 3 opinion words; the label (``pos``/``neg``) is the majority polarity."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.random() < 0.5
        n_major = rng.choice([2, 3])
        words = [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(n_major)]
        words += [rng.choice(NEGATIVE if label else POSITIVE) for _ in range(3 - n_major)]
        rng.shuffle(words)
        parts = [rng.choice(OPENERS)] + [rng.choice(LINKS).format(n=rng.choice(NOUNS), a=a) for a in words]
        rows.append({"text": " ".join(parts), "label": "pos" if label else "neg"})
    return rows


def ner(n: int, seed: int = 0) -> list[dict]:
    """Sentences with entities of four types, tagged in IOB2."""
    rng = random.Random(seed)
    pools = {"PER": PEOPLE, "ORG": ORGS, "LOC": PLACES, "MISC": MISC}
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for piece in rng.choice(NER_TEMPLATES).split():
            if piece.startswith("{"):
                etype = piece[1:-1]
                words = rng.choice(pools[etype]).split()
                tokens += words
                tags += [f"B-{etype}"] + [f"I-{etype}"] * (len(words) - 1)
            else:
                tokens.append(piece)
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def dialogue(n: int, seed: int = 0, n_candidates: int = 20) -> list[dict]:
    """Persona-grounded turns in the ConvAI2 shape; the true reply is the last candidate."""
    rng = random.Random(seed)
    rows = []
    all_replies = [tpl.format(v=v) for _, tpl, vals in FACTS.values() for v in vals]
    for i in range(n):
        keys = rng.sample(sorted(FACTS), 3)
        persona_vals = {k: rng.choice(FACTS[k][2]) for k in keys}
        persona = [FACTS[k][1].format(v=v).replace("i have", "i own") for k, v in persona_vals.items()]
        asked = rng.choice(keys)
        question, template, _ = FACTS[asked]
        reply = template.format(v=persona_vals[asked])
        distractors = rng.sample([r for r in all_replies if r != reply], n_candidates - 1)
        rows.append({"persona": persona, "history": [rng.choice(GREETINGS) + " " + question], "reply": reply,
                     "candidates": distractors + [reply], "dialog": i})
    return rows


def text(n: int, seed: int = 0) -> list[dict]:
    """Lines of running text drawn from the other three corpora, for language modelling."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            line = sentiment(1, rng.randrange(1 << 30))[0]["text"]
        elif kind == 1:
            line = " ".join(ner(1, rng.randrange(1 << 30))[0]["tokens"])
        else:
            d = dialogue(1, rng.randrange(1 << 30), n_candidates=2)[0]
            line = " ".join(d["persona"] + d["history"] + [d["reply"]])
        rows.append({"text": line})
    return rows
