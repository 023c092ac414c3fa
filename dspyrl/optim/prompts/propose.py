"""Where new prompt candidates come from: instructions written by an LM from scored rollouts, and demo sets.

Instructions. Every few GRPO steps an LM (the task LM by default, or a stronger `reflection_lm`) sees, for one predictor,
the current best instruction and the rollouts with the highest and the lowest advantage (inputs, output, reward,
feedback) and writes a new instruction. We ask for plain text, not a structured output format: a small model breaks
formats far more often than it fails to write a sentence, and an instruction is only a sentence. Whatever comes back is
cleaned (fences, quotes, "Instruction:" labels) and checked before it can enter the policy, by checks that need no
strong model; each rejection is counted by its reason in `ProposalStats.rejected`, never fatal:
    empty / too_short / too_long / not_prose / format_markers / cut_off (stopped at max_tokens) / duplicate
    contradicts_outputs  names a label the output field does not allow, or XML tags the original instruction does not
                         use, or drops tags it requires (math_xml's <answer>)
    repetitive           the same words over and over (a small model's loop)
    meta_talk            talks about an instruction instead of being one ("One possible improved instruction could
                         be", "Here is", "I would"): a small model's chat habit, never the instruction itself
    off_task             shares no word with the task: the field names, their descriptions, the labels and the
                         original instruction (compared by their first five letters, so "classify" meets
                         "classification"); text about something else entirely
    echoes_prompt        repeats the proposal prompt's own scaffolding ("The step reads", "(reward 0.00)",
                         "- input headline: ... output topic: ..."): the small model continuing our examples, not
                         writing an instruction (7 of 30 proposals of the embedded model passed the other checks, all
                         7 garbage; 3 of them echoed the prompt, a 4th talked about "this instruction")
    quotes_example       copies five or more consecutive words of an input of this round's runs ("change
                         \"Heading: Scientists grow tomatoes in soil...\" to ..."): about that example, not the task
                         (measured: topic_classification seed 4 adopted exactly this instruction before the check)
    implausible          the task model itself finds the text unlikely: its mean token log-probability, as the reply to
                         "write the instruction for this step", is more than `plausibility_margin` nats below the
                         original instruction's (local models only: the engine scores text, see dspyrl.lm.local)

Demo sets. The empty set, labelled sets drawn from the trainset and bootstrapped sets built from the predictor's own
high-reward calls. When a predictor's output is a label (a `Literal` or `bool` field) sets are label-balanced and shuffled:
a small model shown four "positive" demos answers "positive" to everything.
"""

from __future__ import annotations

import json
import random
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from dspyrl.errors import is_lm_failure
from dspyrl.formats.demos import balanced_demo_set  # noqa: F401  (GRPO imports it from here; one builder, in formats)

PROPOSER_SYSTEM = (
    "You write instructions for a language model. You are shown the current instruction of one step of a program, "
    "examples where it did well and examples where it did badly, with the reward each got. Write ONE better "
    "instruction for that step: say what the step must do and exactly how the output must look. Reply with the "
    "instruction text only, no preamble, no examples, no quotes.")

_LABEL_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:new |improved |better |revised )?instruction(?:s)?\s*(?:\*\*)?\s*[:\-]\s*",
                           re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


@dataclass
class ScoredCall:
    """One predictor call inside a rollout, with the rollout's reward and advantage (what the proposer is shown)."""

    inputs: dict[str, Any]
    outputs: dict[str, Any] | str
    reward: float
    advantage: float
    feedback: str = ""


@dataclass
class ProposalStats:
    asked: int = 0  # completions requested
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    lm_failures: int = 0
    # the last round's completions and what became of them ("" = accepted): for reading proposals, not checkpointed
    last: list = field(default_factory=list, repr=False, compare=False)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def to_json(self) -> dict:
        return {"asked": self.asked, "accepted": self.accepted, "rejected": dict(self.rejected),
                "lm_failures": self.lm_failures}


# ----------------------------------------------------------------------------------------------- instructions
class InstructionProposer:
    """Asks an LM for new instructions for one predictor (see the module docstring)."""

    def __init__(self, lm=None, *, num_proposals: int = 2, max_examples: int = 3, temperature: float = 1.0,
                 max_tokens: int = 160, min_chars: int = 12, max_chars: int = 1200, plausibility_margin: float = 1.5):
        self.lm = lm
        self.num_proposals = num_proposals
        self.max_examples = max_examples
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.plausibility_margin = plausibility_margin
        self.stats = ProposalStats()
        self._original_plausibility: dict[str, float] = {}

    def prompt(self, signature, current_instruction: str, calls: list[ScoredCall]) -> list[dict]:
        ranked = sorted(calls, key=lambda c: c.advantage, reverse=True)
        good = [c for c in ranked if c.advantage > 0][: self.max_examples]
        bad = [c for c in reversed(ranked) if c.advantage < 0][: self.max_examples]
        if not good and not bad:  # flat groups: show the best and worst by raw reward instead
            by_reward = sorted(calls, key=lambda c: c.reward, reverse=True)
            good, bad = by_reward[:1], by_reward[-1:] if len(by_reward) > 1 else []
        inputs = ", ".join(signature.input_fields)
        outputs = ", ".join(f"{name} ({_type_name(f.annotation)})" for name, f in signature.output_fields.items())
        text = [f"The step reads: {inputs}. It must produce: {outputs}.",
                f"Current instruction: {current_instruction!r}", ""]
        for title, group in (("Examples that scored WELL", good), ("Examples that scored BADLY", bad)):
            if group:
                text.append(title + ":")
                text.extend(_format_call(c) for c in group)
                text.append("")
        text.append("Write the new instruction now.")
        return [{"role": "system", "content": PROPOSER_SYSTEM}, {"role": "user", "content": "\n".join(text)}]

    def propose(self, signature, current_instruction: str, calls: list[ScoredCall], *, existing: list[str] = (),
                rollout_id: int = 0, lm=None, seed: int | None = None, original: str | None = None,
                task_lm=None) -> list[str]:
        """New, cleaned, checked, de-duplicated instructions (possibly none); failures and garbage are counted in
        `stats`. `original` is the starting instruction the checks compare with (default: the current one);
        `task_lm` is the model that will run the instruction (its plausibility check needs a local engine)."""
        if self.num_proposals == 0:  # instructions off (demo sets are still proposed by the optimizer)
            return []
        lm = lm or self.lm
        if lm is None:
            import dspy

            lm = dspy.settings.lm
        self.stats.asked += self.num_proposals
        try:
            extra = {"seed": seed} if seed is not None else {}
            raw = lm(messages=self.prompt(signature, current_instruction, calls), n=self.num_proposals,
                     temperature=self.temperature, max_tokens=self.max_tokens, rollout_id=rollout_id, **extra)
        except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
            if not is_lm_failure(err):
                raise
            self.stats.lm_failures += 1
            self.stats.reject("lm_error")
            return []
        seen = {_normal(t) for t in [current_instruction, *existing]}
        accepted = []
        cut_off = _stopped_at_max_tokens(lm, len(raw))
        self.stats.last = []
        for completion, truncated in zip(raw, cut_off):
            text = completion.get("text", "") if isinstance(completion, dict) else str(completion or "")
            instruction, reason = self.clean(text, signature)
            if instruction is not None and truncated:  # an unfinished instruction (measured: rambling, off-task)
                instruction, reason = None, "cut_off"
            if instruction is not None and _normal(instruction) in seen:
                instruction, reason = None, "duplicate"
            if instruction is not None:
                reason = self.check(instruction, signature, original or current_instruction, task_lm, calls)
                instruction = None if reason else instruction
            self.stats.last.append((text, reason))
            if instruction is None:
                self.stats.reject(reason)
            else:
                seen.add(_normal(instruction))
                accepted.append(instruction)
                self.stats.accepted += 1
        return accepted

    def check(self, text: str, signature, original: str, task_lm=None, calls: list[ScoredCall] = ()) -> str:
        """The reason a clean instruction must not reach the policy ("" when it may): module docstring. `calls` are
        this round's scored calls (the proposer is shown some of them)."""
        if contradicts_outputs(text, signature, original):
            return "contradicts_outputs"
        if repetitive(text):
            return "repetitive"
        if meta_talk(text):
            return "meta_talk"
        if off_task(text, signature, original):
            return "off_task"
        if echoes_prompt(text, signature):
            return "echoes_prompt"
        if quotes_example(text, calls):
            return "quotes_example"
        if task_lm is not None and self.plausibility_margin is not None:
            mine = plausibility(task_lm, signature, text)
            if original not in self._original_plausibility:
                self._original_plausibility[original] = plausibility(task_lm, signature, original)
            reference = self._original_plausibility[original]
            if mine is not None and reference is not None and mine < reference - self.plausibility_margin:
                return "implausible"
        return ""

    def clean(self, text: str, signature=None) -> tuple[str | None, str]:
        """(instruction, "") or (None, reason it was rejected)."""
        text = _FENCE.sub("", (text or "").strip()).strip()
        text = _LABEL_PREFIX.sub("", text).strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
            text = text[1:-1].strip()
        text = re.sub(r"\s+\n", "\n", text)
        if not text:
            return None, "empty"
        if "[[ ##" in text or "<|im_" in text or "```" in text:
            return None, "format_markers"
        if len(text) < self.min_chars or len(text.split()) < 3:
            return None, "too_short"
        if len(text) > self.max_chars:
            return None, "too_long"
        if sum(ch.isalpha() for ch in text) < 0.6 * len(text.replace(" ", "")) or not _reads_as_words(text):
            return None, "not_prose"
        return text, ""


_QUOTED = re.compile(r"""['"`‘“*]{1,2}([A-Za-z][\w -]{0,30}?)['"`’”*]{1,2}""")
_ALTERNATIVES = re.compile(r"[A-Za-z]+(?:\s*(?:,\s*or\b|,|/|\bor\b)\s*[A-Za-z]+)+")  # "a, b or c", "a/b"
_TAG = re.compile(r"</?\s*([A-Za-z_][\w-]*)\s*>")


def contradicts_outputs(text: str, signature, original: str) -> bool:
    """True when the text names labels that a label field does not allow, or XML tags that are not the ones the
    original instruction (or the fields' descriptions) uses, or drops a tag the original requires."""
    described = " ".join([original, *(str(f.json_schema_extra.get("desc", "")) if f.json_schema_extra else ""
                                      for f in signature.fields.values())])
    known_tags, tags = {t.lower() for t in _TAG.findall(described)}, {t.lower() for t in _TAG.findall(text)}
    required = {t.lower() for t in _TAG.findall(original)}
    if tags - known_tags or required - tags:
        return True
    labels = _labels(signature)
    if not labels:
        return False
    allowed = labels | {name.lower() for name in signature.fields} | set(_normal(described).split())
    named = {m.strip().lower() for m in _QUOTED.findall(text)}
    for group in _ALTERNATIVES.findall(text):
        options = [w.lower() for w in re.split(r"\s*(?:,\s*or\b|,|/|\bor\b)\s*", group) if w]
        if any(o in labels for o in options):  # a list of answers: every one of them must be a label
            named.update(options)
    return any(word not in allowed and word.split()[0] not in allowed for word in named if word)


def _labels(signature) -> set[str]:
    labels: set[str] = set()
    for f in signature.output_fields.values():
        if typing.get_origin(f.annotation) is typing.Literal:
            labels.update(str(a).lower() for a in typing.get_args(f.annotation))
        elif f.annotation is bool:
            labels.update({"true", "false"})
    return labels


def repetitive(text: str) -> bool:
    """A loop: many repeated word trigrams, one word making up a large share of the text, or a repeated line."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    if len(words) >= 9:
        trigrams = list(zip(words, words[1:], words[2:]))
        if 1 - len(set(trigrams)) / len(trigrams) > 0.2:
            return True
        content = [w for w in words if len(w) > 3]
        if content and max(content.count(w) for w in set(content)) > max(3, 0.2 * len(words)):
            return True
    lines = [line.strip().lower() for line in text.splitlines() if line.strip()]
    return len(lines) >= 2 and len(set(lines)) < len(lines)


_META = re.compile(r"\b(?:(?:improved|new|revised|possible|better|updated|alternative|rewritten)\s+(?:instruction|prompt)s?"
                   r"|(?:instruction|prompt) (?:could|would|might|should) (?:be|read)|as an ai|language model like me"
                   r"|i (?:would|will|think|suggest|recommend|hope|can)|let me|you could|(?:in|of) this (?:instruction|prompt)"
                   r"|the (?:current|original|previous|prior) (?:instruction|prompt))\b"
                   r"|^\W*(?:sure|certainly|okay|ok|here is|here's|here are|of course)\b", re.IGNORECASE)


def meta_talk(text: str) -> bool:
    """The text talks about an instruction (or to the user) instead of being one."""
    return bool(_META.search(text))


# the lines of InstructionProposer.prompt and _format_call, as a small model copies them back
_SCAFFOLD = re.compile(r"\(reward\s*-?\d|\bthe (?:next )?step (?:reads|states|must)\b|\bit must produce\b"
                       r"|\bscored (?:well|badly)\b|->\s*output\b", re.IGNORECASE)


def echoes_prompt(text: str, signature) -> bool:
    """The text repeats the proposal prompt's scaffolding: its headings, its reward marks, or an example's "input
    <field>: ..." / "output <field>: ..." lines."""
    if _SCAFFOLD.search(text):
        return True
    fields = "|".join(re.escape(name.replace("_", " ")) for name in signature.fields)
    return bool(re.search(rf"\b(?:input|output)\s+(?:{fields})\s*:", text, re.IGNORECASE))


QUOTE_WORDS = 5  # "the movie was great" may be a general phrase; five words of a headline or a question are a quote


def quotes_example(text: str, calls: list[ScoredCall]) -> bool:
    """The text copies QUOTE_WORDS or more consecutive words of one of the calls' input values."""
    def runs(value: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[a-z0-9']+", value.lower())
        return {tuple(words[i:i + QUOTE_WORDS]) for i in range(len(words) - QUOTE_WORDS + 1)}

    mine = runs(text)
    return bool(mine) and any(mine & runs(value) for call in calls for value in call.inputs.values()
                              if isinstance(value, str))


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in _STOP}


_STOP = {"that", "this", "with", "from", "into", "your", "each", "only", "then", "than", "they", "them", "their",
         "what", "when", "where", "which", "while", "will", "would", "should", "could", "must", "have", "been",
         "also", "just", "like", "more", "most", "some", "such", "very", "make", "sure", "give", "given", "answer",
         "output", "input", "text", "step", "field", "fields", "following", "instruction", "instructions"}


def off_task(text: str, signature, original: str) -> bool:
    """True when the text shares no content word with the task (module docstring)."""
    words = [original, *(name.replace("_", " ") for name in signature.fields), *_labels(signature)]
    words += [str(f.json_schema_extra.get("desc", "")) for f in signature.fields.values() if f.json_schema_extra]
    task = _stems(" ".join(words))
    return bool(task) and not (_stems(text) & task)


def plausibility(task_lm, signature, text: str) -> float | None:
    """Mean log-probability per token of `text` as the task model's own reply to "write the instruction for this
    step" (None when the LM is not an in-process local model, which alone can score text)."""
    engine = getattr(task_lm, "engine", None)
    if engine is None or not hasattr(engine, "choice_logprobs"):
        return None
    inputs = ", ".join(signature.input_fields)
    outputs = ", ".join(f"{name} ({_type_name(f.annotation)})" for name, f in signature.output_fields.items())
    messages = [{"role": "system", "content": "You write short instructions for a language model."},
                {"role": "user", "content": f"Write the instruction for a step that reads {inputs} and produces "
                                            f"{outputs}."}]
    total = engine.choice_logprobs(messages, [text])[0]
    tokens = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + end of turn, as scored
    return total / tokens


_WORD = re.compile(r"^[\"'(<`*]*(?:[A-Za-z]+(?:['-][A-Za-z]+)*|\d+(?:[.,]\d+)?|</?[a-z]+>)[\"')>`*.,;:!?]*$")


def _reads_as_words(text: str) -> bool:
    """Most whitespace-separated pieces are plain words, numbers or tags, and nothing is a control or replacement
    character: byte-level gibberish (a random or broken model) is mostly letters, but not words."""
    if any(ch == "\ufffd" or (ord(ch) < 32 and ch not in "\n\t") for ch in text):
        return False
    pieces = text.split()
    return bool(pieces) and sum(bool(_WORD.match(p)) for p in pieces) >= 0.8 * len(pieces)


def _stopped_at_max_tokens(lm, count: int) -> list[bool]:
    """For the LM's last call with `count` completions: which were cut off at max_tokens.

    DSPy's history holds one entry per call; its response is one response with `count` choices (LiteLLM) or a tuple
    of `count` responses (engine API, as our local models answer n)."""
    from dspyrl.rollout import finish_reason

    history = getattr(lm, "history", None) or []
    response = history[-1].get("response") if history else None
    if isinstance(response, (tuple, list)):
        reasons = [finish_reason(r) for r in response]
    else:
        choices = getattr(response, "choices", None) or []
        reasons = [getattr(c, "finish_reason", None) for c in choices] or [finish_reason(response)]
    if len(reasons) != count:
        return [False] * count  # cannot tell which is which: keep the other filters only
    return [reason == "length" for reason in reasons]


def _format_call(call: ScoredCall) -> str:
    inputs = "; ".join(f"{k}: {_short(v)}" for k, v in call.inputs.items())
    outputs = call.outputs if isinstance(call.outputs, str) else "; ".join(f"{k}: {_short(v)}" for k, v in call.outputs.items())
    line = f"- input {inputs} -> output {_short(outputs, 200)} (reward {call.reward:.2f})"
    if call.feedback:
        line += f" feedback: {_short(call.feedback, 200)}"
    return line


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normal(text: str) -> str:
    return " ".join(str(text).lower().split())


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


# ----------------------------------------------------------------------------------------------- demo sets
def label_field(signature) -> str | None:
    """The output field that is a label (Literal or bool), when there is one: demo sets are balanced over it."""
    for name, f in signature.output_fields.items():
        if typing.get_origin(f.annotation) is typing.Literal or f.annotation is bool:
            return name
    return None


def demo_fields_available(signature, example) -> bool:
    """True when an example carries every field of the predictor's signature (so it can be shown as a demo)."""
    keys = set(example.keys() if hasattr(example, "keys") else example)
    return all(name in keys for name in signature.fields)


def labelled_demo_sets(signature, trainset, *, k: int, count: int, rng: random.Random) -> list[list[dict]]:
    """`count` demo sets of k labelled trainset rows (only the signature's fields), label-balanced when possible."""
    pool = [{name: ex[name] for name in signature.fields} for ex in trainset if demo_fields_available(signature, ex)]
    if not pool:
        return []
    label = label_field(signature)
    sets = []
    for _ in range(count):
        demos = balanced_demo_set(pool, k, rng, label)
        if demos and demos not in sets:
            sets.append(demos)
    return sets
