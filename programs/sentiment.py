"""sentiment: classify a short review as positive or negative.

Our own labelled set of 48 short reviews (24 each), written for this project. The output field is a Literal, so on a
local model the label can also be chosen by constrained choice (see dspyrl.formats).
"""

from __future__ import annotations

from typing import Literal

import dspy

DESCRIPTION = "Binary sentiment of a short review (48 labelled rows of our own)."

LABELS = ("positive", "negative")


class ClassifySentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField(desc="a short customer or film review")
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


def build_program() -> dspy.Module:
    return dspy.Predict(ClassifySentiment)


def exact_label(example, pred, trace=None) -> float:
    """1.0 when the predicted label equals the gold label (case and whitespace ignored)."""
    predicted = str(getattr(pred, "sentiment", "") or "").strip().lower()
    return float(predicted == example.sentiment)


def build_reward(judge_lm=None):
    return exact_label


_ROWS = [
    ("I loved every minute of this film, the cast was superb.", "positive"),
    ("The battery died after two days and support never answered.", "negative"),
    ("Absolutely delicious food and the staff were so kind.", "positive"),
    ("A dull, predictable plot that dragged on forever.", "negative"),
    ("This blender is powerful, quiet and easy to clean.", "positive"),
    ("The hotel room was dirty and smelled of smoke.", "negative"),
    ("What a charming, funny and heartfelt movie.", "positive"),
    ("The shoes fell apart within a week. Waste of money.", "negative"),
    ("Fast delivery and the jacket fits perfectly.", "positive"),
    ("I want my two hours back; the acting was wooden.", "negative"),
    ("The concert was breathtaking from start to finish.", "positive"),
    ("My order arrived broken and the refund took a month.", "negative"),
    ("A wonderful book that I could not put down.", "positive"),
    ("The app crashes every time I open it.", "negative"),
    ("Great value, works exactly as described.", "positive"),
    ("The waiter was rude and the soup was cold.", "negative"),
    ("Stunning visuals and a moving soundtrack.", "positive"),
    ("Cheap plastic that cracked on the first use.", "negative"),
    ("The best coffee I have had in years.", "positive"),
    ("Terrible customer service, I will never shop here again.", "negative"),
    ("My kids adore this game and so do I.", "positive"),
    ("The sequel is a boring mess with no heart.", "negative"),
    ("Comfortable seats and a friendly crew made the flight a joy.", "positive"),
    ("The headphones hiss constantly and hurt my ears.", "negative"),
    ("An inspiring documentary, beautifully told.", "positive"),
    ("The paint peeled off after one rain. Awful.", "negative"),
    ("I am thrilled with this purchase, highly recommended.", "positive"),
    ("The plot made no sense and the ending was lazy.", "negative"),
    ("Lovely little cafe with fresh pastries.", "positive"),
    ("It stopped working after a week and smells burnt.", "negative"),
    ("A clever, gripping thriller with a great twist.", "positive"),
    ("The instructions were useless and parts were missing.", "negative"),
    ("Excellent sound quality for such a small speaker.", "positive"),
    ("Overpriced, bland and the portions were tiny.", "negative"),
    ("The staff went above and beyond to help us.", "positive"),
    ("I regret buying this; it is slow and noisy.", "negative"),
    ("Sweet, funny and full of warmth. I smiled all the way.", "positive"),
    ("The room was freezing and the heater was broken.", "negative"),
    ("This vacuum is a game changer, so easy to use.", "positive"),
    ("Painfully slow service and a wrong order.", "negative"),
    ("Gorgeous hike with amazing views, well worth it.", "positive"),
    ("The screen scratched on day one. Very disappointed.", "negative"),
    ("A delightful performance by the whole orchestra.", "positive"),
    ("The movie was too loud, too long and too silly.", "negative"),
    ("Soft, warm and beautifully made blanket.", "positive"),
    ("The charger overheats and the cable frays.", "negative"),
    ("Our guide was brilliant and the tour was fascinating.", "positive"),
    ("Horrible smell, leaking bottle, never again.", "negative"),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(review=review, sentiment=label).with_inputs("review") for review, label in _ROWS]
