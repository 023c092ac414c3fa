"""summarize: a one-sentence summary of a short document, judged for faithfulness and brevity.

16 short documents with reference summaries, written for this project. The reward:
- `brevity` (0.3): 1.0 up to 25 words, falling linearly to 0 at 50 words;
- `faithful` (0.7): with a judge LM, its score for "states only what the document says and keeps the main point";
  without one, token F1 against the reference summary (a ROUGE-1-like proxy) so the program runs offline too.
"""

from __future__ import annotations

import dspy

from dspyrl.rewards.combine import WeightedReward
from dspyrl.rewards.judge import RewardModule
from dspyrl.rewards.metrics import field_reward, length_penalty, token_f1

DESCRIPTION = "One-sentence summaries of short documents (16 rows of our own); judge faithfulness + brevity."

MAX_WORDS = 25

RUBRIC = ("The summary is faithful to the document: every claim in it is supported by the document, nothing is "
          "invented or contradicted, and it keeps the document's main point. Score 0 for any invented fact, "
          "1 for a faithful summary of the main point. Ignore length.")


class Summarize(dspy.Signature):
    """Summarize the document in one short sentence that keeps its main point and adds nothing."""

    document: str = dspy.InputField()
    summary: str = dspy.OutputField(desc=f"one sentence, at most {MAX_WORDS} words")


def build_program() -> dspy.Module:
    return dspy.Predict(Summarize)


def brevity(example, pred, trace=None) -> float:
    return length_penalty(getattr(pred, "summary", ""), max_words=MAX_WORDS)


def build_reward(judge_lm=None):
    if judge_lm is None:
        faithful = field_reward(token_f1, "summary", gold_field="reference")
    else:
        # The judge sees the document (task inputs) and the summary; the reference is a hint of the main point.
        faithful = RewardModule(RUBRIC, judge_lm=judge_lm, output_fields=["summary"], reference_field="reference",
                                name="faithful")
    return WeightedReward(brevity=(brevity, 0.3), faithful=(faithful, 0.7))


_ROWS = [
    ("The town council voted on Tuesday to close the old library on Main Street after an inspection found serious "
     "damage to its roof. Books will move to the community centre until a new building opens in two years.",
     "The council closed the damaged Main Street library and moved its books to the community centre for two years."),
    ("A local bakery has started giving its unsold bread to a homeless shelter every evening. The owner said the "
     "idea came from her staff, who disliked throwing good food away.",
     "A bakery now gives its unsold bread to a homeless shelter each evening, an idea from its staff."),
    ("Heavy rain over the weekend flooded several roads in the valley. Emergency crews rescued two drivers, and "
     "officials advised residents to avoid travel until the water recedes.",
     "Weekend rain flooded valley roads, crews rescued two drivers, and residents were told to avoid travel."),
    ("The school's robotics team won the regional championship with a robot that sorts recycling. The students "
     "built it in six weeks and will compete at the national finals in May.",
     "The school's recycling-sorting robot won the regional championship, sending the team to the May national finals."),
    ("Researchers found that people who walked for thirty minutes a day slept better than those who did not. The "
     "study followed 400 adults for one year.",
     "A year-long study of 400 adults found that walking thirty minutes a day improved sleep."),
    ("The city will add 20 new electric buses next spring, replacing its oldest diesel vehicles. Officials expect "
     "the change to cut fuel costs and reduce noise downtown.",
     "The city will replace old diesel buses with 20 electric ones next spring to cut costs and noise."),
    ("A rare white deer was spotted in the national park last week. Rangers asked visitors to keep their distance "
     "and not to share its exact location online.",
     "Rangers asked visitors to keep away from a rare white deer seen in the national park and not share its location."),
    ("The museum reopened after a year of renovation with a new wing for modern art. Entry will be free for "
     "children under twelve during the first month.",
     "The museum reopened after renovation with a modern art wing and free entry for young children for a month."),
    ("Farmers in the region expect a smaller apple harvest this year because a late frost damaged the blossoms in "
     "April. Prices at local markets are likely to rise.",
     "A late April frost will shrink the region's apple harvest, likely raising market prices."),
    ("The football club announced that its stadium will get solar panels on the roof. The panels should provide "
     "about a third of the stadium's electricity.",
     "The football club will put solar panels on its stadium roof to supply about a third of its electricity."),
    ("A software update for the popular photo app removed a feature many users liked. After complaints, the company "
     "said it will bring the feature back next week.",
     "After complaints about a removed feature, the photo app's maker will restore it next week."),
    ("Volunteers planted 3,000 trees along the river on Saturday to help prevent erosion. The project is part of a "
     "five-year plan to restore the riverbank.",
     "Volunteers planted 3,000 trees along the river to fight erosion as part of a five-year restoration plan."),
    ("The train line between the two cities will close for repairs for ten days in August. Replacement buses will "
     "run every thirty minutes.",
     "The intercity train line closes for ten days of August repairs, with buses every thirty minutes instead."),
    ("A new study suggests that honeybees can recognise human faces by learning patterns of features. Scientists "
     "trained the bees with sugar rewards.",
     "Trained with sugar rewards, honeybees learned to recognise human faces from feature patterns, a study suggests."),
    ("The public pool will extend its opening hours during the summer heatwave, staying open until ten at night. "
     "Lifeguards will be on duty the whole time.",
     "During the heatwave the public pool will stay open until 10 pm with lifeguards on duty."),
    ("A teenager from the village won a national poetry prize for a poem about her grandmother's garden. The prize "
     "includes a scholarship for a writing course.",
     "A village teenager won a national poetry prize and a writing scholarship for a poem about her grandmother's garden."),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(document=d, reference=r).with_inputs("document") for d, r in _ROWS]
