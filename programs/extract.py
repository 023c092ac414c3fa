"""extract: pull a person's name, age and city out of one sentence (two `str` fields and one `int`).

Our own 40 sentences, written for this project, in varied phrasings ("Maria, 34, moved to Lisbon", "In Oslo lives a
51-year-old named Ivan"). The reward is exact match of all three fields (names and cities compared without case or
surrounding whitespace): a reply that gets the age right and misspells the city scores 0. A typed multi-field output
like this is what the `structured` format is for: on a local model every reply parses, and the int is an int.
"""

from __future__ import annotations

import dspy

DESCRIPTION = "Extract name (str), age (int) and city (str) from a sentence (40 rows of our own; exact match)."


class ExtractPerson(dspy.Signature):
    """Extract the person's name, age and city from the sentence."""

    sentence: str = dspy.InputField(desc="one sentence about a person")
    name: str = dspy.OutputField(desc="the person's first name")
    age: int = dspy.OutputField(desc="their age in years")
    city: str = dspy.OutputField(desc="the city they live in or moved to")


def build_program() -> dspy.Module:
    return dspy.Predict(ExtractPerson)


def _same_text(a, b) -> bool:
    return str(a or "").strip().lower() == str(b or "").strip().lower()


def exact_fields(example, pred, trace=None) -> float:
    """1.0 when name, age and city all equal the gold values, else 0.0."""
    try:
        age_ok = int(getattr(pred, "age", None)) == int(example.age)
    except (TypeError, ValueError):
        age_ok = False
    return float(age_ok and _same_text(getattr(pred, "name", None), example.name)
                 and _same_text(getattr(pred, "city", None), example.city))


def build_reward(judge_lm=None):
    return exact_fields


_ROWS = [
    ("Maria, 34, moved to Lisbon last spring.", "Maria", 34, "Lisbon"),
    ("Tom is 27 years old and lives in Boston.", "Tom", 27, "Boston"),
    ("In Oslo lives a 51-year-old named Ivan.", "Ivan", 51, "Oslo"),
    ("Aiko turned 19 this week; she studies in Kyoto.", "Aiko", 19, "Kyoto"),
    ("The baker, Pierre, is 62 and has never left Lyon.", "Pierre", 62, "Lyon"),
    ("At 45, Fatima opened a clinic in Cairo.", "Fatima", 45, "Cairo"),
    ("Lucas (age 8) goes to school in Madrid.", "Lucas", 8, "Madrid"),
    ("Greta is a 73-year-old painter from Hamburg.", "Greta", 73, "Hamburg"),
    ("Our new neighbour Sam, who is 30, came from Denver.", "Sam", 30, "Denver"),
    ("Priya, aged 41, commutes every day in Mumbai.", "Priya", 41, "Mumbai"),
    ("Chen lives in Shanghai and is 56.", "Chen", 56, "Shanghai"),
    ("Olga is 23 and has just moved to Prague.", "Olga", 23, "Prague"),
    ("Born 38 years ago, Diego still lives in Lima.", "Diego", 38, "Lima"),
    ("Nora, a 29-year-old nurse, works in Dublin.", "Nora", 29, "Dublin"),
    ("Ahmed is 64 and retired to Tunis.", "Ahmed", 64, "Tunis"),
    ("Little Emma is 5 and loves the parks of Vienna.", "Emma", 5, "Vienna"),
    ("Kofi, 47, runs a shop in Accra.", "Kofi", 47, "Accra"),
    ("The pianist Lena is 33 and based in Berlin.", "Lena", 33, "Berlin"),
    ("Raj moved to Toronto when he was 25, and he is 25 now.", "Raj", 25, "Toronto"),
    ("Sofia lives in Athens; she is 52.", "Sofia", 52, "Athens"),
    ("Meet Jonas: 36 years old, living in Copenhagen.", "Jonas", 36, "Copenhagen"),
    ("Hana, who is 21, rents a flat in Seoul.", "Hana", 21, "Seoul"),
    ("Marco is an 80-year-old fisherman in Naples.", "Marco", 80, "Naples"),
    ("Yusuf, 39, teaches history in Istanbul.", "Yusuf", 39, "Istanbul"),
    ("Claire is 44 and lives in Montreal with her dog.", "Claire", 44, "Montreal"),
    ("At the age of 17, Mateo moved to Bogota.", "Mateo", 17, "Bogota"),
    ("Anya, a 58-year-old engineer, lives in Kyiv.", "Anya", 58, "Kyiv"),
    ("Ben is 31. He lives in Sydney.", "Ben", 31, "Sydney"),
    ("In Nairobi, 26-year-old Amina writes code.", "Amina", 26, "Nairobi"),
    ("Pablo turned 60 in Seville, where he lives.", "Pablo", 60, "Seville"),
    ("Ingrid, 49, moved from the country to Stockholm.", "Ingrid", 49, "Stockholm"),
    ("Leo is 12 and plays football in Milan.", "Leo", 12, "Milan"),
    ("Zara, aged 35, designs gardens in London.", "Zara", 35, "London"),
    ("Viktor lives in Budapest and is 67 years old.", "Viktor", 67, "Budapest"),
    ("Mina is a 24-year-old student in Tehran.", "Mina", 24, "Tehran"),
    ("Hugo, 42, sells bicycles in Amsterdam.", "Hugo", 42, "Amsterdam"),
    ("The twins' mother, Rosa, is 37 and lives in Quito.", "Rosa", 37, "Quito"),
    ("Erik is 55; his home is in Helsinki.", "Erik", 55, "Helsinki"),
    ("Leila, 28, moved to Paris for work.", "Leila", 28, "Paris"),
    ("Omar is 70 and has lived in Amman all his life.", "Omar", 70, "Amman"),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(sentence=s, name=n, age=a, city=c).with_inputs("sentence") for s, n, a, c in _ROWS]
