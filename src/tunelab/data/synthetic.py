"""Seeded generators of offline task data: learnable, but with negation, contrast and label noise
so that a model has something to learn beyond keyword lookup.

Each generator yields rows with canonical keys; `sources` writes them under the user's column names.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from tunelab.config import ConfigError
from tunelab.data.instructions import instructions

_SUBJECTS = ["the movie", "the service", "this phone", "the food", "our stay", "the battery",
             "the staff", "the app", "the delivery", "the plot", "the hotel", "the concert"]
_POSITIVE = ["great", "wonderful", "excellent", "delightful", "superb", "fantastic", "pleasant",
             "impressive", "lovely", "brilliant", "charming", "reliable"]
_NEGATIVE = ["terrible", "awful", "disappointing", "dreadful", "poor", "horrible", "boring",
             "frustrating", "mediocre", "broken", "rude", "useless"]
_NEUTRAL = ["ordinary", "average", "as described", "on schedule", "standard", "typical",
            "unremarkable", "the usual", "fairly normal", "what we expected", "plain", "routine"]
_ADVERBS = ["", "", "really ", "quite ", "truly ", "rather ", "so "]
_FRAMES = ["{s} was {a}.", "honestly, {s} is {a}", "i thought {s} was {a}.",
           "in my opinion {s} was {a}", "{s} turned out {a}!", "we found {s} {a}."]

SENTIMENT_LABELS = {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}


def sentiment(rng: random.Random, num_classes: int = 2, noise: float = 0.04) -> Iterator[dict]:
    """Sentences whose sentiment follows their last clause; `not` flips polar adjectives."""
    labels = SENTIMENT_LABELS[num_classes]
    words = {"negative": _NEGATIVE, "positive": _POSITIVE, "neutral": _NEUTRAL}
    flip = {"negative": "positive", "positive": "negative", "neutral": "neutral"}
    while True:
        label = rng.choice(labels)
        shown = flip[label] if rng.random() < 0.25 else label
        adjective = rng.choice(words[shown])
        if shown != label:
            adjective = f"not {adjective}"
        text = rng.choice(_FRAMES).format(s=rng.choice(_SUBJECTS),
                                          a=rng.choice(_ADVERBS) + adjective)
        if rng.random() < 0.3:
            other = rng.choice([x for x in labels if x != label])
            lead = rng.choice(_FRAMES).format(s=rng.choice(_SUBJECTS), a=rng.choice(words[other]))
            text = f"{lead.rstrip('.!')}, but {text}"
        if rng.random() < noise:
            label = rng.choice(labels)
        yield {"text": text, "label": label}


def lm_text(rng: random.Random) -> Iterator[dict]:
    """Plain text for self-supervised training: the sentiment sentences, labels dropped."""
    for row in sentiment(rng, num_classes=3, noise=0.0):
        yield {"text": row["text"]}


_CARDS = ["card", "debit card", "credit card", "visa card", "new card", "virtual card"]
_AMOUNTS = ["£20", "$50", "€100", "300 euros", "15 dollars", "£1,200", "a small amount", "$75"]
_MERCHANTS = ["amazon", "a petrol station", "the supermarket", "an online shop", "a hotel in spain",
              "uber", "the pharmacy", "my landlord"]
_WHEN = ["yesterday", "this morning", "last week", "two days ago", "on monday", "just now"]
_OPENERS = ["", "", "", "hi, ", "hello, ", "hey, ", "quick question: ", "please help, ", "urgent: "]
_CLOSERS = ["", "", "", " thanks", " please", " what should i do?", " can you help?",
            " any idea why?"]
# Banking-style intents whose templates share words across intents (card, transfer, top up, fee),
# so telling declined from lost or pending from failed needs more than one keyword.
INTENTS = {
    "card_lost": ["i lost my {card}", "my {card} was stolen {when}",
                  "i can't find my {card} anywhere", "someone took my {card}, please block it",
                  "how do i freeze my {card}? i think it is lost"],
    "card_arrival": ["when will my {card} arrive?", "my {card} still hasn't come in the post",
                     "how long does delivery of a {card} take",
                     "i ordered a {card} {when} and it is not here",
                     "is there a way to track my {card}"],
    "card_declined": ["my {card} was declined at {merchant}",
                      "why did {merchant} reject my {card}?",
                      "payment with my {card} failed {when}",
                      "my {card} doesn't work at {merchant}", "the terminal refused my {card}"],
    "transfer_failed": ["my transfer of {amount} failed",
                        "the {amount} i sent {when} bounced back",
                        "why was my transfer to {merchant} rejected",
                        "i tried to send {amount} but it says failed",
                        "transfer error when sending money"],
    "transfer_pending": ["my transfer of {amount} is still pending",
                         "the {amount} i sent {when} has not arrived yet",
                         "how long does a transfer take to arrive",
                         "money i sent {when} still shows as processing",
                         "why is my transfer to {merchant} taking so long"],
    "balance_check": ["what is my current balance", "how much money do i have left",
                      "show me my account balance", "can i see how much is in my account",
                      "is there still {amount} in my account"],
    "exchange_rate": ["what exchange rate do you use", "how much is {amount} in dollars",
                      "what rate will i get converting to euros",
                      "is the exchange rate fixed at the weekend",
                      "why was the exchange rate at {merchant} so bad"],
    "top_up": ["how do i top up my account", "i want to add {amount} to my account",
               "can i top up with a {card}", "where can i load money onto my account",
               "top up by bank transfer, how?"],
    "top_up_failed": ["my top up of {amount} failed",
                      "i tried to top up {when} and it didn't work", "the top up was declined",
                      "why can't i add money with my {card}", "top up did not go through"],
    "pin_change": ["how do i change my pin", "i forgot my pin",
                   "my pin is blocked after wrong attempts", "can i reset the pin on my {card}",
                   "where do i set a new pin"],
    "refund_request": ["i want a refund from {merchant}",
                       "{merchant} owes me {amount}, how do i get it back",
                       "the refund from {merchant} hasn't shown up",
                       "how do refunds work for {card} payments",
                       "i returned an item {when} but got no refund"],
    "cash_withdrawal_fee": ["why was i charged a fee at the atm",
                            "is there a fee for taking out cash", "the atm took an extra {amount}",
                            "how many free withdrawals do i get",
                            "cash withdrawal fees {when} seem wrong"],
    "direct_debit": ["how do i cancel a direct debit", "there is a direct debit i don't recognise",
                     "set up a direct debit to {merchant}",
                     "stop the direct debit from {merchant}",
                     "a direct debit took {amount} {when}"],
    "account_close": ["i want to close my account", "how do i delete my account",
                      "please terminate my account",
                      "can i cancel my account and get my {amount} back",
                      "close everything, i'm leaving"],
    "unknown_charge": ["there is a payment to {merchant} i didn't make",
                       "i see a charge of {amount} i don't recognise",
                       "someone used my {card} at {merchant}",
                       "what is this {amount} transaction from {when}",
                       "a payment i never made is on my statement"],
}


def intent(rng: random.Random, num_classes: int = len(INTENTS),
           noise: float = 0.03) -> Iterator[dict]:
    """Customer queries from per-intent templates, slot fillers, openers and closers; the first
    `num_classes` intents, drawn uniformly, with a little label noise."""
    if not 2 <= num_classes <= len(INTENTS):
        raise ConfigError("task.num_classes", num_classes,
                          f"2 to {len(INTENTS)} intents for generated intent data")
    labels = list(INTENTS)[:num_classes]
    while True:
        label = rng.choice(labels)
        query = rng.choice(INTENTS[label]).format(
            card=rng.choice(_CARDS), amount=rng.choice(_AMOUNTS), merchant=rng.choice(_MERCHANTS),
            when=rng.choice(_WHEN))
        if rng.random() < noise:
            label = rng.choice(labels)
        yield {"text": rng.choice(_OPENERS) + query + rng.choice(_CLOSERS), "label": label}


_FIRST = ["Marta", "Jonas", "Aiko", "Pedro", "Leila", "Tomas", "Ingrid", "Kofi", "Yara", "Dmitri",
          "Elena", "Rahul", "Sofia", "Mateo", "Hana", "Oskar"]
_LAST = ["Lind", "Okafor", "Tanaka", "Silva", "Haddad", "Novak", "Berg", "Mensah", "Costa",
         "Petrov", "Rossi", "Mehta", "Larsen", "Duarte", "Kim", "Weber"]
_CITIES = ["Oslo", "Lisbon", "Kyoto", "Accra", "Porto", "Krakow", "Bergen", "Lyon", "Quito",
           "Tartu", "Seville", "Pune", "Graz", "Malmo", "Busan", "Leeds"]
_FIELDS = ["chemistry", "economics", "marine biology", "architecture", "linguistics", "mathematics",
           "mechanical engineering", "music", "medicine", "geology"]
_PRODUCTS = ["water filters", "electric bicycles", "solar panels", "hearing aids", "board games",
             "wooden furniture", "drone parts", "organic tea", "running shoes", "weather sensors"]
_COMPANY = ["Labs", "Works", "Systems", "Group", "Studio", "Industries"]
_FILLER = ["The region is known for its long winters.",
           "Local newspapers covered the story for weeks.",
           "Many visitors arrive every summer.", "The old harbour was rebuilt after a storm.",
           "A new railway line opened nearby.", "Critics have praised the design of its offices."]


def _person_facts(rng: random.Random, name: str, cities: list[str],
                  years: list[int]) -> list[tuple]:
    """(sentence, question, answer) triples about one person and the company they founded."""
    born, studied, based = cities
    birth, founded = years
    subject, product = rng.choice(_FIELDS), rng.choice(_PRODUCTS)
    company = f"{name.split()[1]} {rng.choice(_COMPANY)}"
    staff = str(rng.randrange(12, 5000))
    origin = f"{name} was born in {born} in {birth}."
    founding = f"{name} founded {company}, which makes {product}, in {founded}."
    site = f"{company} is based in {based} and employs {staff} people."
    return [(origin, f"Where was {name} born?", born),
            (origin, f"In what year was {name} born?", str(birth)),
            (f"{name} studied {subject} at the University of {studied}.", f"What did {name} study?",
             subject),
            (founding, f"What does {company} make?", product),
            (founding, f"When was {company} founded?", str(founded)),
            (site, f"How many people does {company} employ?", staff),
            (site, f"Where is {company} based?", based)]


def qa(rng: random.Random) -> Iterator[dict]:
    """SQuAD-format rows: a context of shuffled facts about two people and their companies plus
    filler, and one question whose answer is a span. The second person is a distractor of the
    same kind, so answering needs the entity named in the question, not just the answer's type."""
    row = 0
    while True:
        first, last = rng.sample(_FIRST, 2), rng.sample(_LAST, 2)
        names = [f"{first[0]} {last[0]}", f"{first[1]} {last[1]}"]
        cities, years = rng.sample(_CITIES, 6), rng.sample(range(1940, 2015), 4)
        facts = [fact for i in range(2) for fact in
                 _person_facts(rng, names[i], cities[3 * i:3 * i + 3], years[2 * i:2 * i + 2])]
        sentences = list(dict.fromkeys(sentence for sentence, _, _ in facts))
        sentences += rng.sample(_FILLER, 2)
        rng.shuffle(sentences)
        context = " ".join(sentences)
        sentence, question, answer = rng.choice(facts)
        start = context.index(sentence) + sentence.index(answer)
        yield {"id": f"q{row}", "context": context, "question": question,
               "answers": {"text": [answer], "answer_start": [start]}}
        row += 1


GENERATORS: dict[str, Callable[..., Iterator[dict]]] = {"sentiment": sentiment, "lm": lm_text,
                                                        "intent": intent, "qa": qa,
                                                        "instruct": instructions}


def generate(task_name: str, size: int, seed: int, **params) -> list[dict]:
    """`size` rows of the named task's generator, reproducible from `seed`."""
    if task_name not in GENERATORS:
        raise KeyError(task_name)
    rows = GENERATORS[task_name](random.Random(seed), **params)
    return [next(rows) for _ in range(size)]


def params_for(task) -> dict:
    """The generator arguments a task config asks for."""
    if task.name == "sentiment":
        return {"num_classes": task.num_classes or 2}
    if task.name == "intent":
        return {"num_classes": task.num_classes or len(INTENTS)}
    return {}

