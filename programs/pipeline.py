"""pipeline: route a customer message to a store department in two steps, extract then classify.

Step 1 (`extract`) reads the customer's message and names the product it is about; step 2 (`route`) reads ONLY that
product name, not the message, and picks the department. So step 2 can be right only when step 1 was: the program
where credit between modules matters. 48 messages of our own (12 per department), written for this project.

Reward (exact, no judge): 0.8 × the department equals the gold one + 0.2 × token F1 of the extracted product against
the gold product name, so step 1 gets a signal of its own even when step 2 misses.
"""

from __future__ import annotations

from typing import Literal

import dspy

from dspyrl.rewards.combine import WeightedReward
from dspyrl.rewards.metrics import field_reward, token_f1

DESCRIPTION = "Two-step pipeline: extract the product from a customer message, then route it to a department (48 rows)."

DEPARTMENTS = ("electronics", "kitchen", "clothing", "garden")


class ExtractProduct(dspy.Signature):
    """Name the product the customer is writing about, in two or three words."""

    message: str = dspy.InputField(desc="a short customer message")
    product: str = dspy.OutputField(desc="the product, e.g. 'toaster' or 'rain jacket'")


class RouteProduct(dspy.Signature):
    """Pick the store department that sells this product."""

    product: str = dspy.InputField()
    department: Literal["electronics", "kitchen", "clothing", "garden"] = dspy.OutputField()


class ExtractThenRoute(dspy.Module):
    def __init__(self):
        super().__init__()
        self.extract = dspy.Predict(ExtractProduct)
        self.route = dspy.Predict(RouteProduct)

    def forward(self, message: str) -> dspy.Prediction:
        product = self.extract(message=message).product
        department = self.route(product=product).department
        return dspy.Prediction(product=product, department=department)


def build_program() -> dspy.Module:
    return ExtractThenRoute()


def exact_department(example, pred, trace=None) -> float:
    predicted = str(getattr(pred, "department", "") or "").strip().lower()
    return float(predicted == example.department)


def build_reward(judge_lm=None):
    # No judge: both parts have exact answers.
    return WeightedReward(department=(exact_department, 0.8), product=(field_reward(token_f1, "product"), 0.2))


_ROWS = [
    ("The toaster I bought last week stopped heating. Can I get a replacement?", "toaster", "kitchen"),
    ("My new laptop will not charge past 80 percent.", "laptop", "electronics"),
    ("The rain jacket leaks at the shoulders after one walk.", "rain jacket", "clothing"),
    ("The garden hose split open the first time I used it.", "garden hose", "garden"),
    ("Do you have this frying pan in a larger size?", "frying pan", "kitchen"),
    ("The headphones only play sound in the left ear.", "headphones", "electronics"),
    ("These wool socks shrank in the wash, is that normal?", "wool socks", "clothing"),
    ("The lawn mower will not start even with fresh fuel.", "lawn mower", "garden"),
    ("My coffee grinder makes a grinding noise but no powder comes out.", "coffee grinder", "kitchen"),
    ("The phone charger gets very hot after ten minutes.", "phone charger", "electronics"),
    ("I ordered the winter coat in medium but got a small.", "winter coat", "clothing"),
    ("The pruning shears are already blunt after a week.", "pruning shears", "garden"),
    ("The blender lid cracked when I washed it.", "blender", "kitchen"),
    ("Can the smart watch track swimming laps?", "smart watch", "electronics"),
    ("The running shoes rub my heel raw. Can I exchange them?", "running shoes", "clothing"),
    ("How deep should I plant these tulip bulbs?", "tulip bulbs", "garden"),
    ("The kettle switches itself off before the water boils.", "kettle", "kitchen"),
    ("My keyboard is missing the letter Q key.", "keyboard", "electronics"),
    ("The leather belt buckle broke on the second day.", "leather belt", "clothing"),
    ("The wheelbarrow tyre keeps going flat.", "wheelbarrow", "garden"),
    ("Is the chef's knife dishwasher safe?", "chef's knife", "kitchen"),
    ("The television remote does nothing, even with new batteries.", "television remote", "electronics"),
    ("The summer dress faded after the first wash.", "summer dress", "clothing"),
    ("The watering can leaks from the bottom seam.", "watering can", "garden"),
    ("My rice cooker burns the rice at the bottom every time.", "rice cooker", "kitchen"),
    ("The bluetooth speaker disconnects every few minutes.", "bluetooth speaker", "electronics"),
    ("The scarf you sent has a hole in it.", "scarf", "clothing"),
    ("The seed tray arrived crushed.", "seed tray", "garden"),
    ("The mixing bowls are smaller than the picture suggests.", "mixing bowls", "kitchen"),
    ("The tablet screen flickers when it is dimmed.", "tablet", "electronics"),
    ("Do these hiking boots come in wide fit?", "hiking boots", "clothing"),
    ("The hedge trimmer battery lasts only five minutes.", "hedge trimmer", "garden"),
    ("The oven gloves are too thin, I burned my hand.", "oven gloves", "kitchen"),
    ("My webcam picture is blurry in every app.", "webcam", "electronics"),
    ("The pyjamas are lovely but the buttons fell off.", "pyjamas", "clothing"),
    ("Which compost is best for my tomato plants?", "compost", "garden"),
    ("The cutting board warped after a month.", "cutting board", "kitchen"),
    ("The game console fan is very loud.", "game console", "electronics"),
    ("The gloves are too small even in large.", "gloves", "clothing"),
    ("The garden rake lost three teeth on its first use.", "garden rake", "garden"),
    ("The teapot drips every time I pour.", "teapot", "kitchen"),
    ("My printer keeps saying the paper is jammed when it is not.", "printer", "electronics"),
    ("The swimsuit straps are too long. Can I return it?", "swimsuit", "clothing"),
    ("The bird feeder fell apart in the first wind.", "bird feeder", "garden"),
    ("The sandwich maker does not close properly.", "sandwich maker", "kitchen"),
    ("The computer mouse double clicks on its own.", "computer mouse", "electronics"),
    ("The jeans lost their colour after one wash.", "jeans", "clothing"),
    ("The patio heater will not light.", "patio heater", "garden"),
]


def load_examples() -> list[dspy.Example]:
    return [dspy.Example(message=message, product=product, department=department).with_inputs("message")
            for message, product, department in _ROWS]
