"""topic: put a short news headline into one of five sections.

Our own 60 headlines (12 per label), written for this project. A 5-way Literal output: the classification task on which
DSPy's default ChatAdapter gets 0/40 parseable answers from the embedded SmolLM2, and where the adapter choice
(see dspyrl.formats) decides whether a small model is usable at all.
"""

from __future__ import annotations

from typing import Literal

import dspy

DESCRIPTION = "5-way topic of a news headline: sports, politics, science, business, entertainment (60 rows of our own)."

LABELS = ("sports", "politics", "science", "business", "entertainment")


class ClassifyTopic(dspy.Signature):
    """Classify the news headline into its section."""

    headline: str = dspy.InputField(desc="a short news headline")
    topic: Literal["sports", "politics", "science", "business", "entertainment"] = dspy.OutputField()


def build_program() -> dspy.Module:
    return dspy.Predict(ClassifyTopic)


def exact_label(example, pred, trace=None) -> float:
    """1.0 when the predicted section equals the gold one (case and whitespace ignored)."""
    predicted = str(getattr(pred, "topic", "") or "").strip().lower()
    return float(predicted == example.topic)


def build_reward(judge_lm=None):
    return exact_label


_ROWS = [
    ("Late penalty sends the home side into the cup final", "sports"),
    ("Parliament passes the budget after an all-night session", "politics"),
    ("Telescope spots water vapour on a distant planet", "science"),
    ("Bakery chain shares jump after record holiday sales", "business"),
    ("Animated film about a lost robot tops the box office", "entertainment"),
    ("Veteran sprinter wins gold at her fifth championships", "sports"),
    ("Prime minister reshuffles cabinet ahead of election", "politics"),
    ("New battery design charges an electric car in ten minutes", "science"),
    ("Central bank holds interest rates steady for third month", "business"),
    ("Pop star announces surprise album and world tour", "entertainment"),
    ("Rookie goalkeeper saves three penalties in shootout win", "sports"),
    ("Senate rejects proposed changes to voting law", "politics"),
    ("Researchers map the brain of a fruit fly neuron by neuron", "science"),
    ("Airline orders fifty new jets in a multibillion deal", "business"),
    ("Long-running detective series ends after twelve seasons", "entertainment"),
    ("Tennis champion withdraws from the open with a knee injury", "sports"),
    ("Mayor wins re-election by a narrow margin", "politics"),
    ("Vaccine trial shows strong protection against malaria", "science"),
    ("Online retailer cuts jobs as profits fall", "business"),
    ("Actor wins best actress award for role as a jazz singer", "entertainment"),
    ("Marathon record falls on a cool morning in Berlin", "sports"),
    ("Foreign ministers meet to discuss border ceasefire", "politics"),
    ("Scientists grow tomatoes in soil that mimics lunar dust", "science"),
    ("Oil prices climb as supply talks stall", "business"),
    ("Comedy festival sells out in record time", "entertainment"),
    ("Cyclists battle wind and rain on the mountain stage", "sports"),
    ("Opposition leader calls for a vote of no confidence", "politics"),
    ("Quantum computer solves a chemistry problem in minutes", "science"),
    ("Start-up raises funding to expand delivery robots", "business"),
    ("Beloved children's book becomes a stage musical", "entertainment"),
    ("Basketball team clinches the title with a buzzer-beater", "sports"),
    ("President signs climate bill into law", "politics"),
    ("Fossil of a feathered dinosaur found in a quarry", "science"),
    ("Car maker recalls thousands of vehicles over brake fault", "business"),
    ("Streaming service renews fantasy drama for a second season", "entertainment"),
    ("Golfer sinks a hole-in-one to win the playoff", "sports"),
    ("Government announces new tax on sugary drinks", "politics"),
    ("Bees can count to four, a new study suggests", "science"),
    ("Stock markets slide on fears of a slowdown", "business"),
    ("Director's horror film wins top prize at the festival", "entertainment"),
    ("Swimmer breaks the world record in the relay final", "sports"),
    ("Election commission orders a recount in two districts", "politics"),
    ("Satellite images reveal glaciers shrinking faster than expected", "science"),
    ("Coffee chain opens its thousandth store", "business"),
    ("Rock band reunites for a one-night charity concert", "entertainment"),
    ("Football club sacks its manager after five straight losses", "sports"),
    ("Lawmakers debate a ban on phones in schools", "politics"),
    ("Gene therapy restores sight in patients with rare blindness", "science"),
    ("Supermarket profits rise as shoppers return to stores", "business"),
    ("Video game sequel breaks first-week sales records", "entertainment"),
    ("Cricket captain scores a century on his debut", "sports"),
    ("Coalition talks collapse over immigration policy", "politics"),
    ("Engineers test a plane that flies on hydrogen", "science"),
    ("Tech giant buys chip designer for twenty billion", "business"),
    ("Talent show crowns a twelve-year-old violinist", "entertainment"),
    ("Boxer retires undefeated after a split-decision win", "sports"),
    ("Protesters gather outside parliament over pension reform", "politics"),
    ("Astronomers detect a signal from the early universe", "science"),
    ("Housing market cools as mortgage costs rise", "business"),
    ("Blockbuster exhibition of painted film posters opens to crowds", "entertainment"),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(headline=headline, topic=label).with_inputs("headline") for headline, label in _ROWS]
