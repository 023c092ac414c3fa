"""qa_cot: short-answer general-knowledge questions, answered with ChainOfThought and judged.

40 questions with short reference answers, written for this project. The reward:
- with a judge LM (`dspyrl eval qa_cot --judge M`): 0.5 × token F1 against the reference + 0.5 × the judge's score
  for "is the answer correct given the reference" (the judge sees the answer only, not the reasoning);
- without one: 0.5 × exact match + 0.5 × token F1, so the program also runs offline with no second model.
"""

from __future__ import annotations

import dspy

from dspyrl.rewards.combine import WeightedReward
from dspyrl.rewards.judge import RewardModule
from dspyrl.rewards.metrics import exact_match, field_reward, token_f1

DESCRIPTION = "Short-answer questions with ChainOfThought (40 rows of our own); F1 + LM-judge reward."

RUBRIC = ("The answer is correct: it states the same fact as the reference answer (wording may differ) and adds "
          "nothing false. A short answer is fine; a wrong or missing answer scores 0.")


class AnswerQuestion(dspy.Signature):
    """Answer the question with a short phrase (a few words)."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words, no full sentence")


def build_program() -> dspy.Module:
    return dspy.ChainOfThought(AnswerQuestion)


def build_reward(judge_lm=None):
    f1 = field_reward(token_f1, "answer")
    if judge_lm is None:
        return WeightedReward(exact=(field_reward(exact_match, "answer"), 0.5), f1=(f1, 0.5))
    judge = RewardModule(RUBRIC, judge_lm=judge_lm, output_fields=["answer"], reference_field="answer")
    return WeightedReward(f1=(f1, 0.5), judge=(judge, 0.5))


_ROWS = [
    ("What is the capital of France?", "Paris"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("How many days are in a leap year?", "366"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the freezing point of water in degrees Celsius?", "0"),
    ("Which ocean is the largest?", "the Pacific Ocean"),
    ("How many continents are there?", "7"),
    ("What is the longest river in Africa?", "the Nile"),
    ("What is the capital of Japan?", "Tokyo"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the hardest natural substance?", "diamond"),
    ("How many legs does a spider have?", "8"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("What is the square root of 81?", "9"),
    ("What is the main ingredient of guacamole?", "avocado"),
    ("Which organ pumps blood through the human body?", "the heart"),
    ("What is the capital of Canada?", "Ottawa"),
    ("How many minutes are in an hour?", "60"),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100"),
    ("Which animal is known as the king of the jungle?", "the lion"),
    ("What is the smallest prime number?", "2"),
    ("In which country are the pyramids of Giza?", "Egypt"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("What is the capital of Italy?", "Rome"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("How many sides does a hexagon have?", "6"),
    ("What do bees make?", "honey"),
    ("Which star is at the center of our solar system?", "the Sun"),
    ("What is the capital of Australia?", "Canberra"),
    ("Who developed the theory of relativity?", "Albert Einstein"),
    ("What is the largest mammal?", "the blue whale"),
    ("How many hours are in a day?", "24"),
    ("What is the capital of Spain?", "Madrid"),
    ("Which instrument has 88 keys?", "the piano"),
    ("What is frozen water called?", "ice"),
    ("Which continent is Kenya in?", "Africa"),
    ("What is 12 times 12?", "144"),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in _ROWS]
