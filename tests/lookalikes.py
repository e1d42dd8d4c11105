"""Small look-alikes of the real data sets, written by the tests themselves.

The default test tier needs nothing beside the repository: where a test needs a few rows in a data set's
shape (DialogSum dialogues, Multi30k caption pairs, Alpaca instructions, Shakespeare's speeches, HH-RLHF
preference pairs), it writes them from here. Tests whose point is the real data use the ``real_data_dir``
fixture instead (the ``real_data`` tier, tests/conftest.py). Every writer is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

SPEAKERS = ["ROMEO", "JULIET", "MERCUTIO", "First Citizen", "MENENIUS", "NURSE"]
VERSES = [
    "But soft, what light through yonder window breaks?",
    "Speak, speak, and let the people hear thee.",
    "We are accounted poor citizens, the patricians good.",
    "What's in a name? That which we call a rose",
    "By any other word would smell as sweet.",
    "Let us kill him, and we'll have corn at our own price.",
    "Good night, good night! Parting is such sweet sorrow,",
    "That I shall say good night till it be morrow.",
    "A plague o' both your houses! They have made worms' meat of me.",
    "I have a faint cold fear thrills through my veins.",
]

TURNS = [
    "Hi, how can I help you today?",
    "I would like to book a table for two people on Friday evening.",
    "Of course. What time would suit you best, and do you prefer a seat by the window?",
    "Around seven, please, and a window seat would be lovely if you have one.",
    "Let me check the list for that night. Yes, we have one table left near the window.",
    "Wonderful. Could you also tell me whether you serve vegetarian dishes?",
    "We do: three starters, two main courses and most of our desserts have no meat at all.",
    "That sounds great. My friend cannot eat nuts, is that a problem for the kitchen?",
    "Not at all. Tell the waiter when you order and the cook will prepare everything without nuts.",
    "Thank you so much. Should I pay a deposit now or when we arrive on Friday?",
    "No deposit is needed. We only ask you to call us if you cannot come after all.",
    "I will. See you on Friday then, and thanks again for your help.",
]
TOPICS = ["booking", "restaurant", "food", "plans"]

CAPTIONS = [
    ("A dog runs across the grass.", "Ein Hund rennt über das Gras."),
    ("Two men are playing football.", "Zwei Männer spielen Fußball."),
    ("A woman is reading a book.", "Eine Frau liest ein Buch."),
    ("Children are swimming in a lake.", "Kinder schwimmen in einem See."),
    ("A man rides a bicycle down the street.", "Ein Mann fährt mit dem Fahrrad die Straße hinunter."),
    ("A girl in a red dress is dancing.", "Ein Mädchen in einem roten Kleid tanzt."),
    ("Three people are sitting on a bench.", "Drei Personen sitzen auf einer Bank."),
    ("A cat sleeps on a wooden chair.", "Eine Katze schläft auf einem Holzstuhl."),
    ("A boy jumps into the water.", "Ein Junge springt ins Wasser."),
    ("Two women are talking in a café.", "Zwei Frauen unterhalten sich in einem Café."),
    ("A worker repairs the roof of a house.", "Ein Arbeiter repariert das Dach eines Hauses."),
    ("A brown dog catches a ball.", "Ein brauner Hund fängt einen Ball."),
    ("A man is cooking in a small kitchen.", "Ein Mann kocht in einer kleinen Küche."),
    ("People are walking through a busy market.", "Menschen gehen über einen belebten Markt."),
    ("A child is eating an ice cream.", "Ein Kind isst ein Eis."),
    ("A musician plays the guitar on stage.", "Ein Musiker spielt auf der Bühne Gitarre."),
    ("Two dogs are playing in the snow.", "Zwei Hunde spielen im Schnee."),
    ("A woman is painting a picture.", "Eine Frau malt ein Bild."),
    ("A group of friends is climbing a mountain.", "Eine Gruppe von Freunden klettert auf einen Berg."),
    ("An old man is feeding birds in the park.", "Ein alter Mann füttert Vögel im Park."),
    ("A little girl is holding a balloon.", "Ein kleines Mädchen hält einen Luftballon."),
    ("A man in a blue shirt is talking on the phone.", "Ein Mann in einem blauen Hemd telefoniert."),
    ("Two children are building a sandcastle.", "Zwei Kinder bauen eine Sandburg."),
    ("A woman is running along the beach.", "Eine Frau läuft am Strand entlang."),
    ("A man is sleeping on a train.", "Ein Mann schläft in einem Zug."),
    ("Three boys are playing basketball.", "Drei Jungen spielen Basketball."),
    ("A dog is swimming in the river.", "Ein Hund schwimmt im Fluss."),
    ("A woman sells flowers at a stand.", "Eine Frau verkauft Blumen an einem Stand."),
    ("A man is reading a newspaper on a bench.", "Ein Mann liest auf einer Bank eine Zeitung."),
    ("Two girls are riding horses.", "Zwei Mädchen reiten auf Pferden."),
    ("A chef is cutting vegetables.", "Ein Koch schneidet Gemüse."),
    ("A baby is laughing in the grass.", "Ein Baby lacht im Gras."),
    ("A man is walking his dog in the rain.", "Ein Mann geht im Regen mit seinem Hund spazieren."),
    ("Four people are waiting for a bus.", "Vier Menschen warten auf einen Bus."),
    ("A woman is taking a photo of a bridge.", "Eine Frau fotografiert eine Brücke."),
    ("A boy is flying a kite on a hill.", "Ein Junge lässt auf einem Hügel einen Drachen steigen."),
    ("Two men are carrying a heavy box.", "Zwei Männer tragen eine schwere Kiste."),
    ("A girl is drinking water from a bottle.", "Ein Mädchen trinkt Wasser aus einer Flasche."),
    ("A crowd is watching a street performer.", "Eine Menschenmenge sieht einem Straßenkünstler zu."),
    ("A man is fishing from a small boat.", "Ein Mann angelt von einem kleinen Boot aus."),
]

WORDS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("early", "late")]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

HH_QUESTIONS = [
    ("How do I make a cup of tea?", "Pour boiling water over a tea bag, wait three minutes and take it out."),
    ("What is a good name for a cat?", "Many people like short names such as Luna, Milo or Tiger."),
    ("Can you help me plan a birthday party?", "Sure. Start with the guests, then pick a place and food."),
    ("How can I sleep better?", "Go to bed at the same time each night and avoid screens before sleep."),
    ("What should I cook tonight?", "A simple pasta with tomatoes, garlic and basil takes twenty minutes."),
    ("How do I say thank you in German?", "You say 'danke', or 'vielen Dank' for many thanks."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light, so the sky looks blue."),
    ("How can I learn to swim?", "Take lessons at a local pool; a teacher helps you float and breathe."),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def dialogues(count: int, split: str = "train") -> list[dict]:
    """DialogSum-shaped rows {fname, dialogue, summary, topic}; many are longer than 192 tokens."""
    rows = []
    for index in range(count):
        turns = 4 + (index * 5) % 20  # 4 to 23 turns
        lines = [f"#Person{turn % 2 + 1}#: {TURNS[(index + turn) % len(TURNS)]}" for turn in range(turns)]
        summary = f"#Person2# books a table for {index % 4 + 2} on Friday and asks about the food."
        prefix = "dev" if split == "validation" else split
        rows.append(
            {
                "fname": f"{prefix}_{index}",
                "dialogue": "\n".join(lines),
                "summary": summary,
                "topic": TOPICS[index % len(TOPICS)],
            }
        )
    return rows


def write_dialogues(path: Path, count: int, split: str = "train") -> Path:
    return write_jsonl(path, dialogues(count, split))


def caption_pairs(count: int, start: int = 0) -> list[dict]:
    """Multi30k-shaped English -> German caption pairs {en, de} (40 distinct ones)."""
    assert start + count <= len(CAPTIONS), f"there are {len(CAPTIONS)} caption pairs"
    return [{"en": en, "de": de} for en, de in CAPTIONS[start : start + count]]


def write_caption_pairs(path: Path, count: int, start: int = 0) -> Path:
    return write_jsonl(path, caption_pairs(count, start))


def instructions(count: int) -> list[dict]:
    """Alpaca-shaped rows {instruction, input, output}: some with an input, none with an empty output."""
    makers = [
        lambda i: ("Name a color.", "", f"{WORDS[i % len(WORDS)].capitalize()}."),
        lambda i: ("Give the opposite of the word.", *OPPOSITES[i % len(OPPOSITES)]),
        lambda i: ("Write the number in words.", str(i % 10 + 1), NUMBERS[i % 10]),
        lambda i: (
            "Describe the weather in one sentence.",
            "",
            f"It is {OPPOSITES[i % len(OPPOSITES)][0]} and the sky is {WORDS[i % len(WORDS)]} today.",
        ),
    ]
    rows = []
    for index in range(count):
        instruction, given, output = makers[index % len(makers)](index // len(makers))
        rows.append({"instruction": instruction, "input": given, "output": output})
    return rows


def write_instructions(path: Path, count: int) -> Path:
    """A JSON list, as Alpaca's alpaca_data.json is."""
    path.write_text(json.dumps(instructions(count), ensure_ascii=False), encoding="utf-8")
    return path


def speeches(count: int) -> str:
    """Tiny-Shakespeare-shaped text: `SPEAKER:` and a few verses a speech, a blank line between speeches."""
    parts = []
    for index in range(count):
        verses = [VERSES[(index * 3 + line) % len(VERSES)] for line in range(1 + index % 4)]
        parts.append(f"{SPEAKERS[index % len(SPEAKERS)]}:\n" + "\n".join(verses))
    return "\n\n".join(parts) + "\n"


def write_speeches(path: Path, count: int = 400) -> Path:
    path.write_text(speeches(count), encoding="utf-8")
    return path


def preference_pairs(count: int) -> list[dict]:
    """HH-RLHF-shaped pairs: a `\\n\\nHuman: ... \\n\\nAssistant:` prompt (every third one with an earlier
    exchange) and two replies, the chosen one helpful."""
    rows = []
    for index in range(count):
        question, answer = HH_QUESTIONS[index % len(HH_QUESTIONS)]
        prompt = f"\n\nHuman: {question}\n\nAssistant:"
        if index % 3 == 0:
            earlier, reply = HH_QUESTIONS[(index + 1) % len(HH_QUESTIONS)]
            prompt = f"\n\nHuman: {earlier}\n\nAssistant: {reply}" + prompt
        rejected = " I don't know, ask someone else." if index % 2 else " Why would you want to know that?"
        rows.append({"id": f"pair-{index}", "prompt": prompt, "chosen": f" {answer}", "rejected": rejected})
    return rows


def write_preference_pairs(path: Path, count: int) -> Path:
    return write_jsonl(path, preference_pairs(count))
