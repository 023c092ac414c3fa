"""draft_revise: write a one-sentence product description in three steps, draft → critique → revise.

`draft` writes a first sentence from a list of features; `critique` reads the features and the draft and says what is
missing, wrong or too long; `revise` reads all three and writes the final sentence. Only the final sentence is scored.
24 feature lists with reference descriptions of our own, written for this project.

Reward on the final `description`:
- with a judge LM (`--judge M`): 0.8 × a `RewardModule` judge's score for "mentions every feature, invents nothing, one
  sentence", shown the reference description + 0.2 × brevity;
- without one: 0.8 × token F1 against the reference + 0.2 × brevity, so the program also runs offline.
Brevity is 1.0 up to 30 words, falling linearly to 0 at 60.
"""

from __future__ import annotations

import dspy

from dspyrl.rewards.combine import WeightedReward
from dspyrl.rewards.judge import RewardModule
from dspyrl.rewards.metrics import field_reward, length_penalty, token_f1

DESCRIPTION = "Draft → critique → revise a one-sentence product description (24 rows of our own); judge + brevity."

MAX_WORDS = 30

RUBRIC = ("The description is one sentence that mentions every listed feature, states nothing the features do not "
          "support, and reads naturally for a shop page. Score 1 when all features are there and nothing is invented, "
          "0 when features are missing or facts are invented. Ignore length.")


class Draft(dspy.Signature):
    """Write a one-sentence product description that mentions every feature."""

    product: str = dspy.InputField()
    features: str = dspy.InputField(desc="comma-separated features")
    draft: str = dspy.OutputField(desc="one sentence")


class Critique(dspy.Signature):
    """Point out which features the draft leaves out, anything it invents, and whether it is longer than one sentence."""

    product: str = dspy.InputField()
    features: str = dspy.InputField(desc="comma-separated features")
    draft: str = dspy.InputField()
    critique: str = dspy.OutputField(desc="one or two short sentences")


class Revise(dspy.Signature):
    """Rewrite the draft into one sentence that fixes what the critique points out."""

    product: str = dspy.InputField()
    features: str = dspy.InputField(desc="comma-separated features")
    draft: str = dspy.InputField()
    critique: str = dspy.InputField()
    description: str = dspy.OutputField(desc=f"one sentence, at most {MAX_WORDS} words")


class DraftCritiqueRevise(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict(Draft)
        self.critique = dspy.Predict(Critique)
        self.revise = dspy.Predict(Revise)

    def forward(self, product: str, features: str) -> dspy.Prediction:
        draft = self.draft(product=product, features=features).draft
        critique = self.critique(product=product, features=features, draft=draft).critique
        description = self.revise(product=product, features=features, draft=draft, critique=critique).description
        return dspy.Prediction(draft=draft, critique=critique, description=description)


def build_program() -> dspy.Module:
    return DraftCritiqueRevise()


def brevity(example, pred, trace=None) -> float:
    return length_penalty(getattr(pred, "description", ""), max_words=MAX_WORDS)


def build_reward(judge_lm=None):
    if judge_lm is None:
        faithful = field_reward(token_f1, "description", gold_field="reference")
    else:
        # The judge sees the task inputs (product, features), the final description only, and the reference.
        faithful = RewardModule(RUBRIC, judge_lm=judge_lm, output_fields=["description"], reference_field="reference",
                                name="judge")
    return WeightedReward(faithful=(faithful, 0.8), brevity=(brevity, 0.2))


_ROWS = [
    ("water bottle", "stainless steel, keeps drinks cold for 24 hours, leak-proof lid",
     "This leak-proof stainless steel water bottle keeps drinks cold for 24 hours."),
    ("desk lamp", "LED, three brightness levels, USB charging port",
     "An LED desk lamp with three brightness levels and a built-in USB charging port."),
    ("backpack", "waterproof, padded laptop sleeve, 25 litres",
     "A waterproof 25-litre backpack with a padded laptop sleeve."),
    ("tent", "two-person, sets up in five minutes, weighs 2 kg",
     "A two-person tent that weighs 2 kg and sets up in five minutes."),
    ("electric kettle", "1.7 litres, boils in three minutes, auto shut-off",
     "This 1.7-litre electric kettle boils in three minutes and shuts off automatically."),
    ("yoga mat", "non-slip, 6 mm thick, comes with a carry strap",
     "A non-slip 6 mm yoga mat that comes with a carry strap."),
    ("wireless mouse", "silent clicks, 18-month battery life, fits either hand",
     "A wireless mouse with silent clicks and an 18-month battery that fits either hand."),
    ("coffee mug", "ceramic, holds 350 ml, microwave safe",
     "A microwave-safe ceramic coffee mug that holds 350 ml."),
    ("umbrella", "folds to 25 cm, wind resistant, automatic open",
     "A wind-resistant umbrella that opens automatically and folds to 25 cm."),
    ("notebook", "A5, dotted pages, lies flat when open",
     "An A5 dotted notebook that lies flat when open."),
    ("running socks", "cushioned heel, moisture wicking, pack of three",
     "A pack of three moisture-wicking running socks with cushioned heels."),
    ("phone stand", "aluminium, adjustable angle, folds flat",
     "An adjustable aluminium phone stand that folds flat."),
    ("cast iron pan", "pre-seasoned, 26 cm, works on induction",
     "A pre-seasoned 26 cm cast iron pan that works on induction hobs."),
    ("bike light", "rechargeable, 400 lumens, waterproof",
     "A rechargeable, waterproof bike light with 400 lumens."),
    ("lunch box", "three compartments, leak-proof, dishwasher safe",
     "A leak-proof, dishwasher-safe lunch box with three compartments."),
    ("scarf", "merino wool, 180 cm long, machine washable",
     "A machine-washable merino wool scarf, 180 cm long."),
    ("plant pot", "ceramic, drainage hole, 15 cm wide",
     "A 15 cm ceramic plant pot with a drainage hole."),
    ("headphones", "noise cancelling, 30-hour battery, foldable",
     "Foldable noise-cancelling headphones with a 30-hour battery."),
    ("travel pillow", "memory foam, washable cover, clips to a bag",
     "A memory foam travel pillow with a washable cover that clips to your bag."),
    ("cutting board", "bamboo, juice groove, two sizes",
     "A bamboo cutting board with a juice groove, available in two sizes."),
    ("alarm clock", "sunrise light, five nature sounds, snooze button",
     "A sunrise alarm clock with five nature sounds and a snooze button."),
    ("rain boots", "natural rubber, non-slip sole, knee high",
     "Knee-high natural rubber rain boots with a non-slip sole."),
    ("picnic blanket", "waterproof back, folds into a bag, 2 by 2 metres",
     "A 2 by 2 metre picnic blanket with a waterproof back that folds into its own bag."),
    ("board game", "two to six players, 30-minute games, ages eight and up",
     "A board game for two to six players aged eight and up, with 30-minute games."),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(product=product, features=features, reference=reference).with_inputs("product", "features")
            for product, features, reference in _ROWS]
