"""The prompts → weights → prompts schedule: alternate prompt policy and LoRA weights (BetterTogether-style).

    optimized = Schedule(reward, "prompts,lora,prompts", lm=local_lm("smollm2"), run_dir="runs/ptw",
                         prompts=GRPOConfig(max_metric_calls=200), lora=LoraGRPOConfig(steps=40)
                         ).compile(program, trainset=train, valset=val)

Why this order on small local models: with only an instruction, SmolLM2 almost never produces the output format, so
weight GRPO has no signal; prompts first (demos, format) give the weights something to reinforce, and prompts again
re-tune the instruction and demos for the adapted model. Each phase is a whole optimizer with its own budget:
  prompts  dspyrl.GRPO          (GRPOConfig; budget max_metric_calls) on the current LM
  lora     dspyrl.LoraGRPO      (LoraGRPOConfig; budget steps), continuing the adapter of an earlier weights phase
  dpo      dspyrl.LoraDPO        (LoraDPOConfig; budget steps), pairs from rollouts of the current program
A phase starts from the previous phase's program: its instructions and demos, and its LM (after a weights phase, the
local model with the new adapter). One run folder holds one sub-folder per phase (`1-prompts/`, `2-lora/`, ...), each
a complete run folder of its optimizer. Resuming re-runs compile on every phase with resume=True where its folder has
a checkpoint: a finished phase returns its result without work, the interrupted one continues from its checkpoint,
later ones start fresh; so a schedule is resumable at any phase.

The result is chosen on the valset as GRPO chooses its prompt (dspyrl.optim.prompts.select): every phase's output
(the starting program included) is scored greedily, row by row, and a later phase replaces the incumbent only when
its paired interval (GRPO's `select_confidence`) lies above 0, against the incumbent and against the start. Within
noise the earlier, simpler program stays. The best mean used to win, ties going to the later phase (BetterTogether's
rule); on a 3-row valset that kept LoRA phases that were worse on held-out rows (benchmarks/together.py). Without a
valset, the last phase's output. `schedule.phases_done` tells each phase's scores, `schedule.selection` why the
result was kept; the result's LM is the one it was scored on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from dspyrl.errors import ConfigError
from dspyrl.optim.weights.base import program_lm, without_lms
from dspyrl.runs import RunFolder

PHASE_KINDS = ("prompts", "lora", "dpo")


@dataclass
class Phase:
    kind: str  # prompts | lora | dpo
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of that kind's config, e.g. {"steps": 20}


def parse_phases(phases) -> list[Phase]:
    """"prompts,lora,prompts", or a list of kinds, (kind, settings) pairs or Phases."""
    items = [p.strip() for p in phases.split(",")] if isinstance(phases, str) else list(phases)
    parsed = []
    for item in items:
        if isinstance(item, Phase):
            phase = item
        elif isinstance(item, str):
            phase = Phase(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            phase = Phase(str(item[0]), dict(item[1]))
        else:
            raise ConfigError(f"cannot read schedule phase {item!r}",
                              hint="use 'prompts', 'lora', 'dpo' or (kind, settings)")
        if phase.kind not in PHASE_KINDS:
            raise ConfigError(f"unknown schedule phase '{phase.kind}'", hint=f"phases are: {', '.join(PHASE_KINDS)}")
        parsed.append(phase)
    if not parsed:
        raise ConfigError("the schedule has no phases")
    return parsed


class Schedule(Teleprompter):
    """Alternate prompt and weight optimization in one run folder (module docstring)."""

    def __init__(self, reward, phases="prompts,lora,prompts", *, lm=None, reflection_lm=None, format=None,
                 prompts=None, lora=None, dpo=None, run_dir=None, resume: bool = False, progress: bool = True,
                 callbacks=()):
        super().__init__()
        from dspyrl.optim.weights.dpo import LoraDPOConfig
        from dspyrl.optim.prompts.grpo import GRPOConfig
        from dspyrl.optim.weights.grpo import LoraGRPOConfig

        self.reward = reward
        self.phases = parse_phases(phases)
        self.configs = {"prompts": prompts or GRPOConfig(), "lora": lora or LoraGRPOConfig(),
                        "dpo": dpo or LoraDPOConfig()}
        self.lm, self.reflection_lm, self.format = lm, reflection_lm, format
        self.run_dir, self.resume, self.progress = run_dir, resume, progress
        self.step_callbacks = list(callbacks)  # not `callbacks`: DSPy calls on_compile_* on a teleprompter's
        self.phases_done: list[dict] = []

    def compile(self, student, *, trainset, valset=None, teacher=None, **kwargs):
        run = RunFolder(self.run_dir or tempfile.mkdtemp(prefix="dspyrl-schedule-"), resume=self.resume)
        kinds = [p.kind for p in self.phases]
        if self.resume and run.read_config().get("phases") != kinds:
            raise ConfigError(f"cannot resume {run.path}: it ran the schedule {run.read_config().get('phases')}, "
                              f"not {kinds}")
        if not self.resume:
            run.write_config({"optimizer": "dspyrl.Schedule", "phases": kinds,
                              "settings": [{**dataclasses.asdict(self.configs[p.kind]), **p.settings}
                                           for p in self.phases]})
            run.save_checkpoint({"phases": kinds, "done": []})
        # Programs travel between phases without predictor LMs and the LM beside them, so each phase's rollouts run
        # on the LM it is given (with its temperature and rollout ids); the result gets its LM attached at the end.
        start_lm = program_lm(student, self.lm)
        program, lm = without_lms(student), start_lm
        candidates = []  # (val score, phase index, program, lm): the start counts as phase 0
        self.phases_done = []
        for index, phase in enumerate(self.phases, start=1):
            folder = run.path / f"{index}-{phase.kind}"
            resume_phase = (folder / "checkpoint.json").exists()
            before, optimized, after = self._run_phase(phase, program, lm, trainset, valset, folder, resume_phase)
            if index == 1 and before is not None:
                candidates.append((before, 0, program, lm))
            if phase.kind != "prompts":  # the next phases run on the adapted model
                lm = program_lm(optimized)
            program = without_lms(optimized)
            if after is not None:
                candidates.append((after, index, program, lm))
            self.phases_done.append({"phase": index, "kind": phase.kind, "dir": folder.name, "val_before": before,
                                     "val_after": after})
            run.save_checkpoint({"phases": kinds, "done": self.phases_done})
            run.log_metrics({"step": index, "phase": phase.kind, "val_before": before, "val_after": after})
        best_val, best_phase, self.selection = None, len(self.phases), []
        if valset and candidates:  # without a valset the phases' scores are not comparable: keep the last output
            best_val, best_phase, program, lm = self._select(candidates, valset)
        if lm is not start_lm or any(p.lm is not None for _, p in student.named_predictors()):
            program.set_lm(lm)  # the adapted model (or the student's own LMs) travel with the result
        run.save_checkpoint({"phases": kinds, "done": self.phases_done, "best_phase": best_phase, "best_val": best_val,
                             "selection": self.selection})
        run.save_program(program)
        return program

    def _select(self, candidates, valset):
        """(val mean, phase index, program, lm) of the phase output kept (module docstring); `self.selection` gets
        each later phase's paired difference from the incumbent and the verdict."""
        from dspyrl.optim.prompts.select import paired_difference, supported
        from dspyrl.rollout import run_rollouts

        confidence, seed = self.configs["prompts"].select_confidence, self.configs["prompts"].seed
        scored = []
        for _, index, program, lm in sorted(candidates, key=lambda c: c[1]):
            batch = run_rollouts(program, valset, self.reward, lm=lm, format=self.format, temperature=0.0,
                                 progress=False, num_threads=self.configs["prompts"].num_threads)
            scores = {str(r.example_index): float(r.reward.total) for r in batch.rollouts}
            scored.append((batch.mean_reward(), index, program, lm, scores))
        start = incumbent = scored[0]
        for candidate in scored[1:]:
            vs_incumbent = paired_difference(incumbent[4], candidate[4], confidence=confidence, seed=seed)
            vs_start = (vs_incumbent if incumbent is start else
                        paired_difference(start[4], candidate[4], confidence=confidence, seed=seed))
            adopt = supported(vs_incumbent) and supported(vs_start)
            self.selection.append({"phase": candidate[1], "incumbent": incumbent[1], "adopted": adopt,
                                   "val_mean": candidate[0], "vs_incumbent": vs_incumbent})
            if adopt:
                incumbent = candidate
        return incumbent[:4]

    def _run_phase(self, phase: Phase, program, lm, trainset, valset, folder, resume: bool):
        """Run one phase; returns (val score before, its program, val score after)."""
        config = dataclasses.replace(self.configs[phase.kind], **phase.settings)
        common = dict(run_dir=folder, resume=resume, progress=self.progress, callbacks=self.step_callbacks)
        if phase.kind == "prompts":
            from dspyrl.optim.prompts.grpo import GRPO

            if any(p.kind != "prompts" for p in self.phases):
                # weights phases train on the schedule's one format; a per-predictor format learnt by a prompts phase
                # would be a different prompt from the one the weights learnt to answer
                config = dataclasses.replace(config, learn_format=False)

            optimizer = GRPO(self.reward, config, lm=lm, reflection_lm=self.reflection_lm, **common)
            with dspy.context(adapter=self.format) if self.format else contextlib.nullcontext():
                optimized = optimizer.compile(program, trainset=trainset, valset=valset)
            history = optimizer.state.val_history
            return (history[0]["score"] if history else None), optimized, optimizer.state.best["score"]
        if phase.kind == "lora":
            from dspyrl.optim.weights.grpo import LoraGRPO

            optimizer = LoraGRPO(self.reward, config, lm=lm, format=self.format, **common)
        else:
            from dspyrl.optim.weights.dpo import LoraDPO

            optimizer = LoraDPO(self.reward, config, lm=lm, format=self.format, **common)
        optimized = optimizer.compile(program, trainset=trainset, valset=valset)
        return optimizer.result.val_before, optimized, optimizer.result.val_after
