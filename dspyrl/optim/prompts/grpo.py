"""`dspyrl.GRPO`: a DSPy teleprompter that optimizes a program's prompts with group-relative policy optimization.

    optimized = GRPO(reward, max_metric_calls=300).compile(program, trainset=train, valset=val)
    dspyrl.save_program(optimized, "program.json")   # DSPy's own JSON + the learned format; program.load() reads it
    with dspyrl.use_predictor_formats(optimized):    # run it by hand with the format chosen per predictor
        optimized(review="...")

One step, read top to bottom in `compile`:
  1. take `batch_size` training examples; for each, sample `group_size` prompt choices from the PromptPolicy
     (per predictor: an instruction, a demo set and a format; half of a group tries formats it lacks);
  2. run the program once per (example, choice) through the rollout engine and score each run with the reward;
  3. turn rewards into group-relative advantages (each run against the other runs on the same example);
  4. update the policy: K epochs on the clipped surrogate - β·KL(π‖π_ref) + c·H(π);
  5. every `propose_every` steps, add candidates: instructions an LM writes from the best and worst runs (filtered
     before they reach the policy, see propose.py), and demo sets bootstrapped from high-reward runs; every
     `eval_every` steps, score the policy's most likely prompt on a valset minibatch, and on the whole valset only when
     it beats the incumbent there (GEPA's order: most of the budget goes to learning, not to validating losers).
Examples whose last group was solved by every sample (all rewards equal and high: `frac_zero_std`) teach nothing; the
next batches take examples that still vary or fail first.
The returned program is the incumbent: the starting program, replaced only on paired validation evidence, and within
noise the simpler program (dspyrl.optim.prompts.select). `state.final_vs_start` is its paired difference from the
starting program on the valset with an interval. The budget is counted in metric calls the way GEPA counts them: one
per program run that is scored, validation runs included, so optimizers can be compared at equal cost; `state.spent`
splits it into training rollouts and validation. Every sampled request is seeded from the run seed and its rollout id,
so the same seed gives the same run on an engine that honours per-request seeds.
With `run_dir`, every step is checkpointed (see dspyrl.runs) and `resume=True` continues where a run stopped.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from dspyrl.config import check_settings, setting
from dspyrl.formats import format_choices_for
from dspyrl.formats.per_predictor import pin_formats
from dspyrl.errors import ConfigError
from dspyrl.optim.advantages import group_advantages, module_advantages
from dspyrl.optim.prompts.policy import PromptPolicy, UpdateStats, apply_values
from dspyrl.optim.prompts.select import mean_score, paired_difference, record_of, validate
from dspyrl.optim.prompts.propose import (InstructionProposer, ProposalStats, ScoredCall, balanced_demo_set, label_field,
                                  labelled_demo_sets)
from dspyrl.rollout import request_seed
from dspyrl.lm.usage import UsageMeter, assign_role
from dspyrl.runs import EarlyStopping, LiveProgress, RunFolder, rng_from_json, rng_state_to_json


@dataclass
class GRPOConfig:
    """Everything that shapes a GRPO prompt-optimization run (written to the run folder's config.json)."""

    # 100: the budget the README's and the demo's story are measured at (~5 min on SmolLM2 on a CPU); one value for
    # the library, `dspyrl optimize --budget` and the demo (they were 300, 150 and 100).
    max_metric_calls: int = setting(100, "the budget: scored program runs, validation included (as GEPA counts)",
                                    ge=1, flag="--budget")
    group_size: int = setting(4, "prompt choices sampled per training example", ge=1)
    batch_size: int = setting(4, "training examples per step", ge=1)
    lr: float = setting(1.0, "step size on the policy's logits", gt=0)
    clip_eps: float = setting(0.2, "PPO/GRPO ratio clip", ge=0)
    kl_beta: float = setting(0.02, "pull toward the initial policy", ge=0)
    entropy_coef: float = setting(0.0, "bonus for keeping the policy spread out", ge=0)
    inner_epochs: int = setting(4, "K updates per batch of rollouts", ge=1)
    scale_advantages: bool = setting(True, "False: Dr. GRPO (no division by the group std)")
    propose_every: int = setting(2, "steps between candidate rounds (0: never propose)", ge=0)
    num_proposals: int = setting(2, "instructions requested per predictor per round", ge=0)
    proposal_max_tokens: int = setting(160, "length limit of one proposed instruction", ge=1)
    num_demos: int = setting(4, "demos per demo set", ge=0)
    labelled_demo_sets: int = setting(2, "labelled demo sets added at the start, per predictor", ge=0)
    learn_format: bool = setting(True, "the format (chat/json/compact/choice) is a slot of the policy, per predictor")
    bootstrap_min_reward: float = setting(1.0, "runs at or above this reward become demo material")
    max_candidates: int = setting(8, "per slot; the weakest are dropped beyond it", ge=1)
    eval_every: int = setting(2, "steps between validation scores of the most likely prompt (0: start and end only)",
                              ge=0)
    early_stop_patience: int = setting(0, "validation scores without improvement before stopping (0: off)", ge=0)
    temperature: float | None = setting(None, "sampling temperature of training rollouts (None: the LM's own)", ge=0)
    failure_reward: float = setting(0.0, "reward of a run whose LM call or parse failed")
    num_threads: int = setting(4, "concurrent program runs", ge=1)
    seed: int = setting(0, "seed of the prompt sampling and the data order", ge=0)
    credit: str = setting("run", "credit between a program's predictors: 'run' gives every predictor's choice its run's "
                               "group advantage; 'module' counts for each predictor only the groups where its own "
                               "choice varied, with its own ratio (dspyrl.optim.advantages)", choices=("run", "module"))
    select_confidence: float = setting(0.9, "a candidate replaces the incumbent only when this paired-bootstrap "
                                            "interval of its valset gain lies above 0", gt=0, le=0.999)
    val_minibatch: int = setting(4, "valset rows a new candidate is scored on first, half of them rows the "
                                    "incumbent fails; the full valset only when it beats the incumbent there (0: "
                                    "always the full valset)", ge=0)
    skip_saturated: bool = setting(True, "examples whose last group all scored the same high reward wait until the "
                                         "others have been used")
    plausibility_margin: float = setting(1.5, "reject proposals whose mean token log-probability under a local task "
                                              "model is more than this many nats below the original instruction's",
                                         ge=0)

    max_cost: float | None = setting(None, "stop cleanly before the step that would take the run's LM calls (every "
                                           "role: task, reflection, judge) past this many USD; resuming with a higher "
                                           "cap continues", gt=0)

    def __post_init__(self):  # the same ranges the CLI checks at parse time, for library callers
        check_settings(self)


@dataclass
class GRPOState:
    """Everything that changes during a run; `to_json` is the checkpoint."""

    policy: PromptPolicy
    rng: random.Random
    step: int = 0
    metric_calls: int = 0
    lm_calls: int = 0
    failures: int = 0
    tokens: int = 0
    cost: float = 0.0
    wall_s: float = 0.0
    order: list[int] = field(default_factory=list)  # trainset indices of the current epoch, consumed from the front
    demo_pool: dict[str, list[dict]] = field(default_factory=dict)  # predictor -> demos from high-reward runs
    val_history: list[dict] = field(default_factory=list)  # {step, values, scores: {row: score}, score, verdict}
    best: dict | None = None  # the incumbent {step, score, values}: what compile returns
    saturated: list[int] = field(default_factory=list)  # trainset rows whose last group was all-solved
    spent: dict = field(default_factory=lambda: {"train": 0, "validation": 0})  # metric calls by purpose
    val_cursor: int = 0  # where the next validation minibatch starts
    final_vs_start: dict | None = None  # the returned program − the starting program on the valset (paired)
    early: EarlyStopping = field(default_factory=EarlyStopping)
    proposals: ProposalStats = field(default_factory=ProposalStats)
    stopped: str = ""  # why the loop ended ("budget", "early_stop", "cost_cap")
    usage: dict = field(default_factory=dict)  # calls, tokens and cost per LM role so far (dspyrl.lm.usage)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(policy=self.policy.to_json(), rng=rng_state_to_json(self.rng), early=self.early.to_json(),
                    proposals=self.proposals.to_json())
        return data

    def outcome(self) -> dict:
        """What a reader of a finished (or crashed) run asks first: how the budget went and how far the result is from
        the start. One copy for `dspyrl optimize`'s summary.json and the benchmark's per-run details."""
        return {"best_val": self.best, "metric_calls": self.metric_calls, "steps": self.step, "stopped": self.stopped,
                "val_vs_start": self.final_vs_start,
                "budget_split": {**self.spent, "proposal_lm_calls": self.proposals.asked},
                "proposals": self.proposals.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> GRPOState:
        data = dict(data)
        data.update(policy=PromptPolicy.from_json(data["policy"]), rng=rng_from_json(data["rng"]),
                    early=EarlyStopping.from_json(data["early"]), proposals=ProposalStats(**data["proposals"]))
        return cls(**data)


class GRPO(Teleprompter):
    """Prompt optimization with GRPO (module docstring). Settings are GRPOConfig fields, as keywords or a config."""

    def __init__(self, reward, config: GRPOConfig | None = None, *, lm=None, reflection_lm=None, run_dir=None,
                 resume: bool = False, callbacks=(), progress: bool = True, tensorboard: bool = False,
                 instructions: list[str] | dict[str, list[str]] | None = None, **settings):
        super().__init__()
        try:
            self.config = dataclasses.replace(config or GRPOConfig(), **settings)
        except TypeError as err:
            raise ConfigError(f"unknown GRPO setting: {err}",
                              hint=f"settings are: {', '.join(f.name for f in dataclasses.fields(GRPOConfig))}") from err
        self.reward = reward
        self.lm = lm  # None: dspy.settings.lm at compile time
        self.reflection_lm = reflection_lm
        self.run_dir = run_dir
        self.resume = resume
        self.callbacks = list(callbacks)
        self.progress = progress
        self.tensorboard = tensorboard
        self.instructions = instructions  # extra starting candidates: for every predictor, or by predictor name
        self.proposer = InstructionProposer(num_proposals=self.config.num_proposals,
                                            max_tokens=self.config.proposal_max_tokens,
                                            plausibility_margin=self.config.plausibility_margin)
        self.state: GRPOState | None = None
        self.meter: UsageMeter | None = None  # the run's LM usage per role, during and after compile

    # ------------------------------------------------------------------------------------------------ compile
    def compile(self, student, *, trainset, valset=None, teacher=None, **kwargs):
        cfg = self.config
        if not trainset:
            raise ConfigError("GRPO needs a non-empty trainset")
        valset = list(valset or trainset)
        lm = self.lm or dspy.settings.lm
        if lm is None:
            raise ConfigError("GRPO has no LM", hint="pass lm=... or call dspy.configure(lm=...) first")
        student = student.deepcopy()
        batch, val_cost = min(cfg.batch_size, len(trainset)), len(valset)
        if cfg.max_metric_calls < 2 * val_cost + cfg.group_size:
            raise ConfigError(f"budget of {cfg.max_metric_calls} metric calls is too small: the smallest step needs "
                              f"{cfg.group_size} and the two validation runs (start, end) need {2 * val_cost}",
                              hint="raise max_metric_calls, or use a smaller valset, batch_size or group_size")

        run = RunFolder(self.run_dir, resume=self.resume) if self.run_dir else None
        state = self._start(student, trainset, run)
        self.state = state  # readable during and after the run (also when a callback interrupts it)
        callbacks = list(self.callbacks)
        if run and self.tensorboard:
            from dspyrl.runs import TensorBoardCallback

            callbacks.append(TensorBoardCallback(run.path / "tensorboard"))

        # every LM call of the run, per role; restored on resume, so the cap counts what the run spent before
        meter = self.meter = UsageMeter(max_cost=cfg.max_cost, spent=state.usage)
        if state.stopped == "cost_cap":  # resumed after the cap: go on while the (new) cap allows
            state.stopped = ""
        step_cost = 0.0
        with meter.active(), LiveProgress(cfg.max_metric_calls, enabled=self.progress) as live:
            if state.best is None:  # the starting program, scored first: the result is never worse on the valset
                self._validate(student, valset, state, lm)
                self._checkpoint(run, state)
                live.update(state.metric_calls)
            while not state.stopped:
                if meter.over_cap(projected=step_cost):  # the next step would cross the cap: stop, checkpointed
                    state.stopped = "cost_cap"
                    break
                # keep one validation in reserve for the final prompt, unless the policy's most likely prompt is
                # scored already (then the reserve would go unspent: it goes to learning); the last step shrinks to fit
                greedy = record_of(state, state.policy.greedy_values())
                reserve = 0 if greedy is not None and greedy["score"] is not None else val_cost
                room = cfg.max_metric_calls - state.metric_calls - reserve
                step_batch = min(batch, room // cfg.group_size)
                if step_batch < 1:
                    break
                spent_before = meter.cost
                metrics = self._step(student, trainset, valset, state, lm, step_batch)
                step_cost, state.usage = meter.cost - spent_before, meter.to_json()
                metrics["usage"] = {role: {k: row[k] for k in ("calls", "failed", "tokens", "cost")}
                                    for role, row in meter.table().items()}
                if run:  # the step's metrics, then its checkpoint: a kill between the two replays the step, once
                    run.record_step(state.to_json(), metrics)
                live.update(state.metric_calls, metrics)
                for callback in callbacks:
                    callback.on_step_end(metrics)
            state.stopped = state.stopped or "budget"
            if state.stopped != "cost_cap":  # at the cap the incumbent stands: its valset scores are known already
                self._validate(student, valset, state, lm)  # the final policy, unless that prompt was scored already
            start, final = state.val_history[0], record_of(state, state.best["values"])
            state.final_vs_start = paired_difference(start["scores"], final["scores"],
                                                     confidence=cfg.select_confidence, seed=cfg.seed)
            self._checkpoint(run, state)
            live.update(state.metric_calls)

        optimized = student.deepcopy()
        apply_values(optimized, state.best["values"])
        pin_formats(optimized)  # a plain call honours the learned formats (dspyrl.formats.per_predictor)
        if run:
            run.save_program(optimized)
        return optimized

    # ------------------------------------------------------------------------------------------------ one step
    def _step(self, student, trainset, valset, state: GRPOState, lm, batch: int) -> dict:
        cfg, started = self.config, time.perf_counter()
        state.step += 1
        indices = self._next_batch(state, len(trainset), batch)
        examples = [trainset[i] for i in indices]

        # 1. sample a prompt choice for every (example, sample) before running anything: reproducible and thread-safe
        choices = [state.policy.sample_group(state.rng, cfg.group_size, explore=("format",)) for _ in examples]
        old_log_probs = [[state.policy.log_prob(c) for c in row] for row in choices]

        # 2. run and score
        def configure(program_copy, example_index, sample_index):
            return state.policy.apply(program_copy, choices[example_index][sample_index])

        rollouts = self._run(state, student, examples, lm, configure, group_size=cfg.group_size,
                             temperature=cfg.temperature, purpose="train")

        # 3. group-relative advantages
        rewards = [[0.0] * cfg.group_size for _ in examples]
        by_position = {}
        for r in rollouts.rollouts:
            rewards[r.example_index][r.sample_index] = float(r.reward.total)
            by_position[(r.example_index, r.sample_index)] = r
        adv = group_advantages(rewards, scale=cfg.scale_advantages)
        for index, group in zip(indices, rewards):  # an all-solved group teaches nothing: others go first next time
            solved = len(set(group)) == 1 and group[0] >= cfg.bootstrap_min_reward
            if solved and index not in state.saturated:
                state.saturated.append(index)
            elif not solved and index in state.saturated:
                state.saturated.remove(index)

        # 4. policy update
        credit = module_advantages(rewards, choices, scale=cfg.scale_advantages)
        settings = dict(lr=cfg.lr, clip_eps=cfg.clip_eps, kl_beta=cfg.kl_beta, entropy_coef=cfg.entropy_coef,
                        epochs=cfg.inner_epochs)
        if cfg.credit == "module":
            stats = update_by_module(state.policy, [c for row in choices for c in row], credit, **settings)
        else:
            stats = state.policy.update([c for row in choices for c in row], adv.flat(),
                                        [lp for row in old_log_probs for lp in row], **settings)

        # 5. new candidates from this step's runs, and a validation score of the most likely prompt
        scored = {}  # predictor -> ScoredCall list
        predictors = dict(student.named_predictors())
        for (ei, si), r in by_position.items():
            for call in r.calls:
                if call.predictor not in predictors:
                    continue
                inputs = _call_inputs(call, examples[ei], predictors[call.predictor].signature)
                scored.setdefault(call.predictor, []).append(ScoredCall(
                    inputs, call.outputs if call.outputs else (call.completion or ""),
                    float(r.reward.total), adv.advantages[ei][si], r.reward.feedback or (r.error or "")))
                self._collect_demo(state, predictors[call.predictor], call, inputs, r)
        proposed = 0
        if cfg.propose_every and state.step % cfg.propose_every == 0:
            proposed = self._propose(student, state, scored, lm)
        val_score = None
        if cfg.eval_every and state.step % cfg.eval_every == 0:
            val_score = self._validate(student, valset, state, lm)

        flat = [x for row in rewards for x in row]
        mean = sum(flat) / len(flat)
        components: dict[str, list[float]] = {}
        for r in rollouts.rollouts:
            for name, value in (r.reward.components or {}).items():
                components.setdefault(name, []).append(float(value))
        state.wall_s += time.perf_counter() - started
        return {
            "step": state.step, "reward_mean": mean,
            "reward_std": (sum((x - mean) ** 2 for x in flat) / len(flat)) ** 0.5,
            "reward_components": {k: sum(v) / len(v) for k, v in components.items()},
            "frac_zero_std": adv.frac_zero_std,
            "module_frac_zero": {name: c.frac_zero for name, c in credit.items()},  # groups without signal for it
            "surrogate_loss": stats.surrogate_loss, "kl": stats.kl,
            "entropy": stats.entropy, "clip_frac": stats.clip_frac, "grad_norm": stats.grad_norm,
            "step_failures": sum(1 for r in rollouts.rollouts if r.error), "failures": state.failures,
            "metric_calls": state.metric_calls, "lm_calls": state.lm_calls, "tokens": state.tokens,
            "cost": state.cost, "wall_s": state.wall_s, "val_score": val_score,
            "best_val": state.best["score"] if state.best else None, "new_candidates": proposed,
            "saturated": len(state.saturated), "spent": dict(state.spent),
            "proposals": state.proposals.to_json(),
            "greedy": {p: {s: state.policy.slots[p][s].origins[i] for s, i in slots.items()}
                       for p, slots in state.policy.greedy().items()},
        }

    # ------------------------------------------------------------------------------------------------ pieces
    def _start(self, student, trainset, run: RunFolder | None) -> GRPOState:
        cfg = self.config
        predictors = [name for name, _ in student.named_predictors()]
        if not predictors:
            raise ConfigError("the program has no predictors to optimize (no dspy.Predict inside)")
        if run and self.resume:
            saved = run.read_config()
            if saved.get("predictors") != predictors or saved.get("trainset_size") != len(trainset):
                raise ConfigError(f"cannot resume {run.path}: it was started on another program or trainset",
                                  hint="resume with the same program and data, or start a new run folder")
            state = GRPOState.from_json(run.load_checkpoint())
            run.truncate_metrics(state.step)
            return state
        rng = random.Random(cfg.seed)
        policy = PromptPolicy.from_program(student)
        for name, predictor in student.named_predictors():
            extra = self.instructions.get(name, []) if isinstance(self.instructions, dict) else self.instructions or []
            for text in extra:
                policy.add_candidate(name, "instruction", text, "given", max_candidates=cfg.max_candidates)
            if predictor.demos:
                policy.add_candidate(name, "demos", [], "empty", max_candidates=cfg.max_candidates)
            if cfg.learn_format:  # alongside the context's format (the original candidate, None)
                for format_name in format_choices_for(predictor.signature):
                    policy.add_candidate(name, "format", format_name, "format", max_candidates=cfg.max_candidates)
            for demos in labelled_demo_sets(predictor.signature, trainset, k=cfg.num_demos,
                                            count=cfg.labelled_demo_sets, rng=rng):
                policy.add_candidate(name, "demos", demos, "labelled", max_candidates=cfg.max_candidates)
        state = GRPOState(policy=policy, rng=rng, early=EarlyStopping(patience=cfg.early_stop_patience))
        if run:
            run.write_config({**dataclasses.asdict(cfg), "optimizer": "dspyrl.GRPO", "predictors": predictors,
                              "trainset_size": len(trainset), "lm": _lm_name(self.lm or dspy.settings.lm),
                              "reflection_lm": _lm_name(self.reflection_lm)})
        return state

    def _next_batch(self, state: GRPOState, n_train: int, batch: int) -> list[int]:
        """Epoch-shuffled order: every example is used once before any is used twice, and (skip_saturated) examples
        whose last group was all-solved only when no other example is left; an epoch of only those is skipped while
        some example still varies or fails."""
        picked: list[int] = []
        waiting = set(state.saturated) if self.config.skip_saturated else set()
        while len(picked) < batch:
            if not state.order or (waiting and set(state.order) <= waiting and len(waiting) < n_train):
                state.order = list(range(n_train))
                state.rng.shuffle(state.order)
            open_rows = [i for i in state.order if i not in picked]
            if not open_rows:
                state.order = []
                continue
            index = next((i for i in open_rows if i not in waiting), open_rows[0])
            state.order.remove(index)
            picked.append(index)
        return picked

    def _run(self, state: GRPOState, student, examples, lm, configure, *, group_size: int = 1, temperature=None,
             purpose: str = "validation"):
        """Run and score through the rollout engine; adds its counters to the run's budget."""
        from dspyrl.rollout import run_rollouts

        # rollout ids move on with every step, so sampled groups (temperature > 0) never get an earlier step's cached
        # samples back, while a resumed run replays its interrupted step from the cache
        batch = run_rollouts(student, examples, self.reward, group_size=group_size, lm=lm, configure=configure,
                             num_threads=self.config.num_threads, progress=False, temperature=temperature,
                             failure_reward=self.config.failure_reward, rollout_offset=state.step * group_size,
                             seed=self.config.seed)
        state.metric_calls += len(batch.rollouts)  # one per scored run, failures included (GEPA counts the same)
        state.spent[purpose] = state.spent.get(purpose, 0) + len(batch.rollouts)
        state.lm_calls += int(batch.lm_calls or 0)
        state.failures += int(batch.failures or 0)
        state.tokens += int(batch.tokens)
        state.cost += float(batch.cost or 0.0)
        return batch

    def _validate(self, student, valset, state: GRPOState, lm) -> float:
        """Score the policy's most likely prompt on the valset and keep the incumbent or replace it (select.validate);
        returns the prompt's mean score on the rows it was scored on."""
        return validate(state, state.policy.greedy_values(), self.config, n_rows=len(valset),
                        score_rows=lambda record, rows: self._score_rows(student, valset, state, lm, record, rows))

    def _score_rows(self, student, valset, state: GRPOState, lm, record: dict, rows: list[str]) -> None:
        """Buy the scores of `record`'s prompt on the valset rows it lacks (each counted in the budget)."""
        missing = [r for r in rows if r not in record["scores"]]
        if missing:
            program = student.deepcopy()
            apply_values(program, record["values"])
            batch = self._run(state, program, [valset[int(r)] for r in missing], lm, None)
            for r, rollout in zip(missing, batch.rollouts):
                record["scores"][r] = float(rollout.reward.total)
        if len(record["scores"]) == len(valset):
            record["score"] = mean_score(record["scores"], list(record["scores"]))

    def _propose(self, student, state: GRPOState, scored: dict, lm) -> int:
        """New instruction candidates from the LM and a bootstrapped demo set, per predictor; returns how many."""
        cfg, added = self.config, 0
        self.proposer.stats = state.proposals
        reflection_lm = self.reflection_lm or lm
        if reflection_lm is not None:  # a copy that books its calls to the reflection role
            reflection_lm = assign_role(reflection_lm.copy(), "reflection")
        predictors = dict(student.named_predictors())
        for name, predictor in predictors.items():
            slot = state.policy.slots[name]["instruction"]
            current = slot.candidates[state.policy.greedy()[name]["instruction"]]
            if scored.get(name):
                for text in self.proposer.propose(predictor.signature, current, scored[name], existing=slot.candidates,
                                                  rollout_id=state.step, lm=reflection_lm, original=slot.candidates[0],
                                                  seed=request_seed(cfg.seed, 10**6 + state.step), task_lm=lm):
                    if state.policy.add_candidate(name, "instruction", text, f"proposed@{state.step}",
                                                  max_candidates=cfg.max_candidates) is not None:
                        added += 1
            pool = state.demo_pool.get(name, [])
            if len(pool) >= min(2, cfg.num_demos):
                demos = balanced_demo_set(pool, cfg.num_demos, state.rng, label_field(predictor.signature))
                if state.policy.add_candidate(name, "demos", demos, f"bootstrapped@{state.step}",
                                              max_candidates=cfg.max_candidates) is not None:
                    added += 1
        return added

    def _collect_demo(self, state: GRPOState, predictor, call, inputs: dict, rollout) -> None:
        """Keep a high-reward run's call (its inputs and outputs) as demo material for that predictor."""
        if rollout.error or call.failed or float(rollout.reward.total) < self.config.bootstrap_min_reward:
            return
        outputs = call.outputs if isinstance(call.outputs, dict) else {}
        from dspy.predict.predict import serialize_object

        demo = {k: serialize_object(v) for k, v in {**inputs, **outputs}.items() if k in predictor.signature.fields}
        if len(demo) != len(predictor.signature.fields):
            return
        pool = state.demo_pool.setdefault(call.predictor, [])
        if demo not in pool:
            pool.append(demo)
            del pool[:-64]  # the most recent 64 are enough material

    def _checkpoint(self, run: RunFolder | None, state: GRPOState) -> None:
        if run:
            if self.meter is not None:
                state.usage = self.meter.to_json()
            run.save_checkpoint(state.to_json())


def update_by_module(policy: PromptPolicy, choices: list, credit: dict, **settings) -> UpdateStats:
    """credit="module": each predictor's slots take their own clipped-surrogate step, with that predictor's own ratio
    and advantages, averaged over the samples that carry signal for it (dspyrl.optim.advantages.module_advantages)."""
    parts = []
    for name, slots in policy.slots.items():
        keep = [i for i, counted in enumerate(credit[name].flat_counted()) if counted] if name in credit else []
        advantages = credit[name].flat() if name in credit else []
        part = PromptPolicy({name: slots})  # shares the Slot objects, so updating the part updates the policy
        parts.append((len(keep), part.update([{name: choices[i][name]} for i in keep], [advantages[i] for i in keep],
                                             **settings)))
    kl, entropy = policy.kl_and_entropy()
    counted = sum(n for n, _ in parts)
    return UpdateStats(sum(s.surrogate_loss for _, s in parts), kl, entropy,
                       sum(n * s.clip_frac for n, s in parts) / counted if counted else 0.0,
                       sum(s.grad_norm ** 2 for _, s in parts) ** 0.5)


def _call_inputs(call, example, signature) -> dict:
    """The predictor's inputs in this call: recorded by the rollout engine when it does, else (single-step programs)
    the example's inputs when they are exactly what the predictor reads."""
    recorded = getattr(call, "inputs", None)
    if recorded:
        return {k: v for k, v in dict(recorded).items() if k in signature.input_fields}
    inputs = example.inputs()
    if all(name in inputs for name in signature.input_fields):
        return {name: inputs[name] for name in signature.input_fields}
    return {}


def _lm_name(lm) -> str | None:
    return getattr(lm, "model", None) if lm is not None else None
