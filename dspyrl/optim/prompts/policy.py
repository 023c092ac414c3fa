"""PromptPolicy: a stochastic policy over a DSPy program's prompts, trained with GRPO's clipped objective.

For every predictor of the program the policy holds independent categorical distributions, one per *slot*:
    instruction   the signature's instruction text
    demos         the few-shot demo set (empty, labelled from the trainset, bootstrapped from high-reward rollouts)
    format        the format that formats the predictor's calls: chat, json, compact, or constrained choice where it
                  applies (None: whatever the context's format is; see dspyrl.formats.per_predictor)
A slot is just a list of JSON-able candidate values plus logits, so another choice is one entry in SLOT_SETTERS.

A *choice* picks one candidate index per (predictor, slot); its log-probability is the sum of the slots' log-softmax
values, because the slots are independent. The update maximises, over K inner epochs of full-batch gradient ascent,

    J(θ) = mean_i min(ρ_i A_i, clip(ρ_i, 1-ε, 1+ε) A_i)  -  β KL(π_θ || π_ref)  +  c H(π_θ)
    ρ_i  = π_θ(choice_i) / π_old(choice_i)

with exact, analytic gradients: everything is a small softmax, so no autograd is needed and KL and entropy are computed
exactly per slot instead of being estimated from samples. π_ref is the initial policy (uniform unless a prior was set).
All state is plain JSON (`to_json` / `from_json`).

Applying a choice to a program sets `predictor.signature` (instruction) and `predictor.demos`: exactly the state DSPy's
own `save`/`load` keep, so an optimized program needs nothing from dspyrl to run. The format is a `dspyrl_format`
attribute of the predictor, which `RunFolder.save_program` writes into program.json and DSPy's load restores; it takes
effect inside `use_predictor_formats(program)` (every dspyrl entry point runs programs that way).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dspyrl.formats.per_predictor import FORMAT_ATTRIBUTE, set_format

Choice = dict[str, dict[str, int]]  # predictor name -> slot name -> candidate index


# ----------------------------------------------------------------------------------------------- one categorical slot
@dataclass
class Slot:
    """One categorical choice: candidate values (JSON-able), current logits, reference logits, and where each came from."""

    candidates: list[Any] = field(default_factory=list)
    logits: list[float] = field(default_factory=list)
    ref_logits: list[float] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def probs(self, logits: list[float] | None = None) -> np.ndarray:
        z = np.asarray(self.logits if logits is None else logits, dtype=float)
        z = np.exp(z - z.max())
        return z / z.sum()

    def find(self, value: Any) -> int | None:
        key = _canonical(value)
        return next((i for i, c in enumerate(self.candidates) if _canonical(c) == key), None)

    def add(self, value: Any, origin: str, logit: float | None = None) -> int | None:
        """Add a candidate; returns its index, or None when an equal candidate is already there.

        By default a newcomer enters at the current top logit, so it is as likely as the best candidate and gets tried;
        it joins the reference at the reference's top logit, so the KL term does not push against trying it."""
        if self.find(value) is not None:
            return None
        self.candidates.append(value)
        self.logits.append(max(self.logits) if logit is None and self.logits else float(logit or 0.0))
        self.ref_logits.append(max(self.ref_logits) if self.ref_logits else 0.0)
        self.origins.append(origin)
        return len(self.candidates) - 1

    def remove(self, index: int) -> None:
        for column in (self.candidates, self.logits, self.ref_logits, self.origins):
            del column[index]

    def kl_and_entropy(self) -> tuple[float, float]:
        p, r = self.probs(), self.probs(self.ref_logits)
        return float(np.sum(p * (np.log(p) - np.log(r)))), float(-np.sum(p * np.log(p)))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------------- applying choices
def set_instruction(predictor, text: str) -> None:
    predictor.signature = predictor.signature.with_instructions(text)


def set_demos(predictor, demos: list[dict]) -> None:
    import dspy

    predictor.demos = [dspy.Example(**demo) for demo in demos]


# How each slot's value is written into a predictor. A new slot is one more entry here.
SLOT_SETTERS: dict[str, Callable[[Any, Any], None]] = {"instruction": set_instruction, "demos": set_demos,
                                                       "format": set_format}


def apply_values(program, values: dict[str, dict[str, Any]]) -> None:
    """Write chosen slot values (predictor -> slot -> value) into a program in place."""
    predictors = dict(program.named_predictors())
    for predictor_name, slots in values.items():
        for slot_name, value in slots.items():
            SLOT_SETTERS[slot_name](predictors[predictor_name], value)


@dataclass
class UpdateStats:
    surrogate_loss: float  # -mean clipped surrogate at the last inner epoch (lower is better)
    kl: float  # KL(π || π_ref), summed over slots, after the update
    entropy: float  # entropy summed over slots, after the update
    clip_frac: float  # fraction of samples whose ratio was clipped at the last inner epoch
    grad_norm: float  # norm of the first epoch's gradient (0 means nothing to learn from)


# ----------------------------------------------------------------------------------------------- the policy
class PromptPolicy:
    """Independent categorical distributions over each predictor's slots (see the module docstring)."""

    def __init__(self, slots: dict[str, dict[str, Slot]] | None = None):
        self.slots: dict[str, dict[str, Slot]] = slots or {}

    @classmethod
    def from_program(cls, program) -> PromptPolicy:
        """A policy whose only candidates are the program's current instruction, demos and format (greedy == the program)."""
        policy = cls()
        for name, predictor in program.named_predictors():
            policy.slots[name] = {
                "instruction": Slot([predictor.signature.instructions], [0.0], [0.0], ["original"]),
                "demos": Slot([[_demo_to_dict(d) for d in predictor.demos]], [0.0], [0.0], ["original"]),
                "format": Slot([getattr(predictor, FORMAT_ATTRIBUTE, None)], [0.0], [0.0], ["original"]),
            }
        return policy

    # -- sampling and probabilities ----------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Choice:
        """One choice drawn from the policy."""
        return self.sample_group(rng, 1)[0]

    def sample_group(self, rng: random.Random, size: int, explore: tuple[str, ...] = ()) -> list[Choice]:
        """`size` choices for one training example's group, drawn from the policy; in the slots named in `explore`,
        only the first half (rounded up) is, and the rest take candidates the group has not used yet (in proportion
        to the policy among them; from the policy again when the group has used them all).

        Why (GRPO explores its "format" slot so): the group is GRPO's comparison, and independent draws spend it on
        repeats. On math_xml (budget 80, so 3 steps of 4 examples x 4 samples) they left the format slot's most
        likely value at "structured" (0.083 on the valset) while "compact", never the most likely, scored 0.308 there
        as a fixed format. New instructions and demo sets enter the policy at the top logit, so the policy samples
        them at once; the formats all start level and only chance brings one into a group. The half drawn from the
        policy keeps the training reward a measure of what the policy has learnt. The cost is a bias: the other half
        over-represents unlikely formats, so the update leans on the ranking within groups; validation, not the
        policy, decides what is returned (select.py)."""
        group: list[Choice] = [{p: {} for p in self.slots} for _ in range(size)]
        from_policy = (size + 1) // 2
        for predictor, slots in self.slots.items():
            for slot_name, slot in slots.items():
                probs, used = slot.probs(), set()
                for position, choice in enumerate(group):
                    weights = probs
                    if slot_name in explore and position >= from_policy and len(used) < len(probs):
                        weights = np.where([i in used for i in range(len(probs))], 0.0, probs)
                        weights = weights / weights.sum()
                    index = _draw(rng, weights)
                    choice[predictor][slot_name] = index
                    used.add(index)
        return group

    def greedy(self) -> Choice:
        """The most probable candidate in every slot (ties go to the earlier, i.e. older, candidate)."""
        return {p: {s: int(np.argmax(slot.logits)) for s, slot in slots.items()} for p, slots in self.slots.items()}

    def log_prob(self, choice: Choice) -> float:
        total = 0.0
        for predictor, slots in self.slots.items():
            for slot_name, slot in slots.items():
                total += math.log(slot.probs()[choice[predictor][slot_name]])
        return total

    def probability(self, predictor: str, slot: str, value: Any) -> float:
        """Current probability of a candidate value (0.0 when it is not a candidate)."""
        index = self.slots[predictor][slot].find(value)
        return 0.0 if index is None else float(self.slots[predictor][slot].probs()[index])

    def values(self, choice: Choice) -> dict[str, dict[str, Any]]:
        return {p: {s: self.slots[p][s].candidates[i] for s, i in slots.items()} for p, slots in choice.items()}

    def apply(self, program, choice: Choice) -> dict:
        """Write a choice into a program in place; returns the JSON-able record of it (indices and origins)."""
        apply_values(program, self.values(choice))
        return {"choice": choice,
                "origins": {p: {s: self.slots[p][s].origins[i] for s, i in slots.items()} for p, slots in choice.items()}}

    def greedy_values(self) -> dict[str, dict[str, Any]]:
        return self.values(self.greedy())

    def kl_and_entropy(self) -> tuple[float, float]:
        kl = entropy = 0.0
        for slots in self.slots.values():
            for slot in slots.values():
                k, h = slot.kl_and_entropy()
                kl, entropy = kl + k, entropy + h
        return kl, entropy

    # -- candidates ---------------------------------------------------------------------------------------------
    def add_candidate(self, predictor: str, slot: str, value: Any, origin: str, *, max_candidates: int = 8,
                      logit: float | None = None) -> int | None:
        """Add a candidate (see Slot.add); when the slot is full, first drop its least probable candidate
        other than the original and the current best. Returns the new index or None for a duplicate."""
        target = self.slots[predictor].setdefault(slot, Slot())
        if target.find(value) is not None:
            return None
        while len(target.candidates) >= max_candidates:
            best = int(np.argmax(target.logits))
            removable = [i for i in range(len(target.candidates)) if i != best and target.origins[i] != "original"]
            if not removable:
                break
            target.remove(min(removable, key=lambda i: target.logits[i]))
        return target.add(value, origin, logit)

    # -- the GRPO update ----------------------------------------------------------------------------------------
    def update(self, choices: list[Choice], advantages: list[float], old_log_probs: list[float] | None = None, *,
               lr: float = 1.0, clip_eps: float = 0.2, kl_beta: float = 0.0, entropy_coef: float = 0.0,
               epochs: int = 4) -> UpdateStats:
        """K epochs of gradient ascent on the clipped surrogate - β·KL + c·H (module docstring); returns stats."""
        if len(choices) != len(advantages):
            raise ValueError(f"{len(choices)} choices but {len(advantages)} advantages")
        old = list(old_log_probs) if old_log_probs is not None else [self.log_prob(c) for c in choices]
        advantage = np.asarray(advantages, dtype=float)
        n = max(1, len(choices))
        surrogate, clip_frac, first_grad_norm = 0.0, 0.0, None
        for _ in range(max(1, epochs)):
            ratio = np.array([math.exp(self.log_prob(c) - o) for c, o in zip(choices, old)])
            clipped = np.clip(ratio, 1 - clip_eps, 1 + clip_eps)
            surrogate = float(np.mean(np.minimum(ratio * advantage, clipped * advantage))) if choices else 0.0
            # min() picks the clipped branch (gradient 0) exactly when the ratio has left the trust region
            # in the direction the advantage pushes it.
            active = ~(((advantage > 0) & (ratio > 1 + clip_eps)) | ((advantage < 0) & (ratio < 1 - clip_eps)))
            clip_frac = float(np.mean(~active)) if choices else 0.0
            weights = np.where(active, ratio * advantage, 0.0) / n
            grads, norm2 = {}, 0.0
            for predictor, slots in self.slots.items():
                for slot_name, slot in slots.items():
                    p = slot.probs()
                    grad = np.zeros_like(p)
                    for choice, w in zip(choices, weights):
                        if w != 0.0:  # ∇ log π(k) = onehot(k) - p
                            grad -= w * p
                            grad[choice[predictor][slot_name]] += w
                    if kl_beta:  # ∂KL/∂θ_j = p_j (log(p_j / r_j) - KL)
                        log_ratio = np.log(p) - np.log(slot.probs(slot.ref_logits))
                        grad -= kl_beta * p * (log_ratio - np.sum(p * log_ratio))
                    if entropy_coef:  # ∂H/∂θ_j = -p_j (log p_j + H)
                        log_p = np.log(p)
                        grad += entropy_coef * -p * (log_p - np.sum(p * log_p))
                    grads[(predictor, slot_name)] = grad
                    norm2 += float(np.sum(grad ** 2))
            if first_grad_norm is None:
                first_grad_norm = math.sqrt(norm2)
            for (predictor, slot_name), grad in grads.items():
                slot = self.slots[predictor][slot_name]
                slot.logits = [float(v) for v in np.asarray(slot.logits) + lr * grad]
        kl, entropy = self.kl_and_entropy()
        return UpdateStats(-surrogate, kl, entropy, clip_frac, first_grad_norm or 0.0)

    # -- JSON ---------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {p: {s: {"candidates": slot.candidates, "logits": slot.logits, "ref_logits": slot.ref_logits,
                        "origins": slot.origins} for s, slot in slots.items()} for p, slots in self.slots.items()}

    @classmethod
    def from_json(cls, state: dict) -> PromptPolicy:
        return cls({p: {s: Slot(list(v["candidates"]), [float(x) for x in v["logits"]],
                                [float(x) for x in v["ref_logits"]], list(v["origins"]))
                        for s, v in slots.items()} for p, slots in state.items()})

    def describe(self, top: int = 3) -> dict:
        """Per predictor and slot: the `top` candidates with their probabilities (for logs and the CLI)."""
        out = {}
        for predictor, slots in self.slots.items():
            out[predictor] = {}
            for slot_name, slot in slots.items():
                probs = slot.probs()
                order = np.argsort(-probs)[:top]
                out[predictor][slot_name] = [{"p": round(float(probs[i]), 4), "origin": slot.origins[i],
                                              "value": slot.candidates[i]} for i in order]
        return out


def _draw(rng: random.Random, probs: np.ndarray) -> int:
    u, total = rng.random(), 0.0
    for index, p in enumerate(probs):
        total += p
        if u < total:
            return index
    return len(probs) - 1


def _demo_to_dict(demo) -> dict:
    """A demo (dspy.Example or dict) as a plain JSON-able dict of its fields."""
    from dspy.predict.predict import serialize_object

    items = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    return {k: serialize_object(v) for k, v in items.items() if not k.startswith("dspy_")}
