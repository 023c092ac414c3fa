"""LoRA GRPO: train a PEFT LoRA adapter of a program's local model with TRL's GRPOTrainer and the program's reward.

    optimized = LoraGRPO(reward, steps=40, run_dir="runs/lora").compile(program, trainset=train, valset=val)
    optimized(question="...")        # runs on local_lm(model, adapter="runs/lora/adapter")

DSPy's own GRPO needs an Arbor server on GPUs; this one runs on one machine, CPU included, and scales out the way TRL
does (`trl_args={"use_vllm": True, ...}` under `accelerate launch`): every GRPOConfig field passes through.

Two ways to get completions, one GRPO (TRL computes the group-relative advantages with the same formula as
dspyrl.optim.advantages: (r - mean) / (std + 1e-4) per group, unbiased std; `scale_rewards="none"` is Dr. GRPO):

- rollout="predictor" (the default for single-predictor programs): the TRL prompt of an example is the predictor's
  chat messages exactly as the DSPy format formats them, with the program's current instruction and demos (so a
  prompt optimized first helps the weights next). TRL generates G completions per prompt itself (plain transformers,
  or vLLM when asked); each completion is parsed by the same format into the predictor's outputs, wrapped in a
  dspy.Prediction and scored by the program's reward. An unparseable completion gets `failure_reward`. This rewards
  the predictor's outputs as the program's prediction: exact for Predict / ChainOfThought-style programs whose forward
  returns the predictor's outputs.
- rollout="program" (the default with several predictors): TRL's `rollout_func` runs the WHOLE program G times per
  example through dspyrl.rollout.run_rollouts, on the model being trained, and scores each run with the program's
  reward. Calls are grouped per predictor as DSPy's mmGRPO groups them per module: the dataset holds one row per
  (example, predictor); the G rows of (example, predictor k) are predictor k's call in each of the G runs, and each
  carries its run's reward, so predictor k's advantages compare its calls on the same example. Rows of one example sit
  together in a generation batch, so the G runs are shared by all its predictors. Covered: any number of predictors,
  any control flow between them; a predictor called several times in one run contributes its first call; a run that
  never reached a predictor (or whose LM call failed) gives that row no reward (TRL then gives it no advantage).
  Completions are generated in-process by a LocalEngine over the trained model (not vLLM). TRL is handed the sampled
  token ids when the engine reports them (`Generation.token_ids`); otherwise the completion text is re-tokenized,
  which differs from what was sampled when the model picked a non-canonical split or bytes that do not decode — on
  the random byte-level test model that alone stops learning, on a real model's mostly valid text it rarely matters.

The G samples of a prompt share it (`share_prompt=True`, the default; dspyrl.optim.weights.shared_prompt): one
prefill per prompt and G decodes from its repeated KV cache (TRL's rollout_func, TRL's own generation settings), and
one prompt forward per group in the loss (exact: the same log-probabilities and gradients as TRL's G forwards).

The adapter is saved as a PEFT folder `<run>/adapter/` (servable with `dspyrl serve --adapter`), and the optimized
program is the student with every predictor on `local_lm(model, adapter=<run>/adapter)`. Checkpoints and resume: see
dspyrl.optim.weights.trl_callbacks (safetensors + JSON, no pickle).
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.utils.exceptions import LMAuthError, LMBillingError

from dspyrl.config import check_settings, setting
from dspyrl.errors import ConfigError, is_lm_failure
from dspyrl.lm.hosted import ProviderRefused
from dspyrl.optim.weights import base, shared_prompt, trl_callbacks
from dspyrl.rewards.combine import RewardResult, score_group, scores_groups, to_reward_result

ROLLOUT_MODES = ("auto", "predictor", "program")


@dataclass
class LoraGRPOConfig:
    """What shapes a LoRA GRPO run (written to the run folder's config.json). TRL names where TRL has one."""

    steps: int = setting(40, "optimizer steps (TRL max_steps)", ge=1)
    num_generations: int = setting(4, "G: completions per prompt, the group", ge=2)
    prompts_per_step: int = setting(1, "examples per optimizer step (per device); rows per step = prompts_per_step × G",
                                    ge=1)
    gradient_accumulation_steps: int = setting(1, "optimizer steps' gradient accumulation (TRL's)", ge=1)
    learning_rate: float = setting(3e-4, "learning rate of the LoRA weights", gt=0)
    loss_type: str = setting("dapo", "TRL's: grpo | dr_grpo | dapo | bnpo | ...")
    beta: float = setting(0.02, "KL to the base model (0 skips the reference pass and the KL column)", ge=0)
    epsilon: float = setting(0.2, "PPO clip", ge=0)
    scale_rewards: str = setting("group", "\"none\" = Dr. GRPO (no division by the group std)")
    temperature: float = setting(1.0, "sampling temperature of the group's completions", ge=0)
    max_completion_length: int = setting(64, "completion tokens per sample", ge=1)
    lora_r: int = setting(16, "LoRA rank", ge=1)
    lora_alpha: int = setting(32, "LoRA alpha (scale = alpha / r)", gt=0)
    lora_dropout: float = setting(0.0, "LoRA dropout", ge=0, le=1)
    target_modules: Any = setting("all-linear", "modules LoRA adapts (PEFT's target_modules)")
    modules_to_save: list[str] | None = setting(None, "e.g. [\"lm_head\"]: train it fully (kept tied to the embeddings)")
    # one prefill per prompt for its G samples, and one prompt forward per group in the loss (shared_prompt.py);
    # False: TRL's own generation and forward, each over the G copies of the prompt
    share_prompt: bool = setting(True, "one prefill per prompt for its G samples, one prompt forward per group")
    merge_lora_for_generation: bool = setting(False, "merge the LoRA weights into the base ones while generating")
    rollout: str = setting("auto", "predictor | program | auto (predictor for one predictor, program for several)",
                           choices=("auto", "predictor", "program"))
    failure_reward: float = setting(0.0, "reward of an unparseable completion / a failed run")
    save_every: int = setting(10, "steps between checkpoints (0: none; the final adapter is always saved)", ge=0)
    num_threads: int = setting(4, "concurrent reward calls / program runs", ge=1)
    seed: int = setting(0, "seed of the training", ge=0)
    trl_args: dict[str, Any] = setting(help="any other trl.GRPOConfig field, passed through unchanged",
                                       default_factory=dict)

    def __post_init__(self):  # the ranges `dspyrl finetune` checks at parse time, for library callers too
        check_settings(self)

    def rollout_mode(self, n_predictors: int) -> str:
        if self.rollout not in ROLLOUT_MODES:
            raise ConfigError(f"rollout must be one of {', '.join(ROLLOUT_MODES)}, got '{self.rollout}'")
        if self.rollout == "auto":
            return "predictor" if n_predictors == 1 else "program"
        if self.rollout == "predictor" and n_predictors != 1:
            raise ConfigError(f"rollout='predictor' needs a single-predictor program, this one has {n_predictors}",
                              hint="use rollout='program' (TRL rollout_func over the whole program)")
        return self.rollout


class LoraGRPO(base.LocalWeightsOptimizer):
    """GRPO on LoRA weights (module docstring). Settings are LoraGRPOConfig fields, as keywords or a config."""

    kind = "lora-grpo"
    config_class = LoraGRPOConfig

    def check(self, student, trainset) -> dict:
        cfg = self.config
        if not trainset:
            raise ConfigError("LoRA GRPO needs a non-empty trainset")
        if self.reward is None:
            raise ConfigError("LoRA GRPO needs a reward")
        if len(trainset) < cfg.prompts_per_step * cfg.gradient_accumulation_steps:
            raise ConfigError(f"one step takes {cfg.prompts_per_step * cfg.gradient_accumulation_steps} examples "
                              f"(prompts_per_step × gradient_accumulation_steps) but the trainset has {len(trainset)}")
        predictors = [name for name, _ in student.named_predictors()]
        return {"predictors": predictors, "rollout": cfg.rollout_mode(len(predictors)), "trainset_size": len(trainset)}

    def train_weights(self, student, trainset, spec, start_adapter, format, lm, run, resume_from):
        """Build the TRL GRPOTrainer, train (or resume) and save the adapter; returns the run's training seconds."""
        from datasets import Dataset
        import trl

        cfg = self.config
        predictors = [name for name, _ in student.named_predictors()]
        mode = cfg.rollout_mode(len(predictors))
        rows_per_example = len(predictors) if mode == "program" else 1
        model, tokenizer = base.load_trainable_model(spec, start_adapter)
        rollout_func = program_rollouts = None
        share = cfg.share_prompt and not cfg.trl_args.get("use_vllm")  # vLLM shares prompts its own way
        if mode == "predictor":
            name, predictor = next(iter(student.named_predictors()))
            rows = [{"prompt": predictor_messages(predictor, format, example), "example_index": i}
                    for i, example in enumerate(trainset)]
            reward_func = PredictorReward(self.reward, trainset, predictor.signature, format, cfg.failure_reward,
                                          cfg.num_threads)
            if share:
                rollout_func = shared_prompt.GroupRollouts(merge_lora=cfg.merge_lora_for_generation)
        else:
            rows = [{"prompt": json.dumps({"example": i, "predictor": name}), "example_index": i}
                    for i in _shuffled(len(trainset), cfg.seed) for name in predictors]
            rollout_func = program_rollouts = ProgramRollouts(student, trainset, self.reward, format, spec, tokenizer,
                                                              cfg)
            reward_func = rollout_func.reward
        settings = {
            **base.common_args(run.path / "trl", cfg.seed, self.report_to), "max_steps": cfg.steps,
            "per_device_train_batch_size": cfg.prompts_per_step * rows_per_example * cfg.num_generations,
            "num_generations": cfg.num_generations, "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "learning_rate": cfg.learning_rate, "loss_type": cfg.loss_type, "beta": cfg.beta, "epsilon": cfg.epsilon,
            "scale_rewards": cfg.scale_rewards, "temperature": cfg.temperature,
            "max_completion_length": cfg.max_completion_length,
            # rows of one example must share a generation batch (program mode); the order was shuffled above
            "shuffle_dataset": mode != "program",
        }
        if share:  # the shared-prompt loss forward needs the KV cache, which checkpointing drops (shared_prompt.py)
            settings["gradient_checkpointing"] = False
        callback = trl_callbacks.run_callback(run, kind=self.kind, total_steps=cfg.steps, save_every=cfg.save_every,
                                            progress=self.progress, step_callbacks=self.step_callbacks,
                                            resume_from=resume_from,
                                            extra_metrics=(program_rollouts or reward_func).pop_metrics, meter=self.meter)
        with trl_callbacks.quiet_trl():
            args = base.make_args(trl.GRPOConfig, settings, cfg.trl_args)
            trainer_class = shared_prompt.shared_prompt_trainer_class() if share else trl.GRPOTrainer
            trainer = trainer_class(
                model=model, reward_funcs=reward_func, args=args, train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer, rollout_func=rollout_func,
                peft_config=None if start_adapter else base.lora_config(
                    cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.modules_to_save))
            trl_callbacks.train(trainer, run, callback, resume_from)
            base.save_adapter(trainer.model, run.path / base.ADAPTER)
        return callback.wall_s


# ----------------------------------------------------------------------------------------------- predictor mode
def predictor_messages(predictor, format, example) -> list[dict]:
    """The chat messages the predictor would send for `example`: its signature and demos as the format writes them."""
    signature = predictor.signature
    inputs = example.inputs() if hasattr(example, "inputs") else example
    missing = [k for k, f in signature.input_fields.items() if k not in inputs and f.is_required()]
    if missing:
        raise ConfigError(f"example inputs lack the predictor's input field(s) {', '.join(missing)}",
                          hint="name the example inputs as the signature's, or use rollout='program'")
    values = {k: inputs[k] for k in signature.input_fields if k in inputs}
    return format.format(signature, list(predictor.demos), values)


class PredictorReward:
    """TRL reward function: parse each completion with the format, score the prediction with the program's reward."""

    __name__ = "program_reward"  # TRL names its reward columns after it

    def __init__(self, reward, examples, signature, format, failure_reward: float, num_threads: int):
        self.reward, self.examples, self.signature, self.format = reward, examples, signature, format
        self.failure_reward, self.num_threads = failure_reward, max(1, num_threads)
        self._scored: list[RewardResult] = []

    def __call__(self, prompts, completions, example_index, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        if scores_groups(self.reward):
            results = self.score_groups(example_index, texts)
            self._scored.extend(results)
            return [r.total for r in results]
        with ThreadPoolExecutor(self.num_threads) as pool:
            # each scoring runs in a copy of the trainer's context, so a reward that reads dspy.settings (a judge's
            # LM, say) sees the caller's, as inside run_rollouts
            futures = [pool.submit(contextvars.copy_context().run, self.score, i, text)
                       for i, text in zip(example_index, texts)]
            results = [future.result() for future in futures]
        self._scored.extend(results)
        return [r.total for r in results]

    def score(self, index: int, text: str) -> RewardResult:
        try:
            outputs = self.format.parse(self.signature, text)
        except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
            if not is_lm_failure(err):
                raise
            return RewardResult(self.failure_reward, feedback=f"{type(err).__name__}", failed=True)
        try:
            return to_reward_result(self.reward(self.examples[index], dspy.Prediction(**outputs), None),
                                    failure_score=self.failure_reward)
        except (LMAuthError, LMBillingError) as err:  # the judge's key or credits: every later score fails alike
            raise ProviderRefused(err) from err
        except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
            if not is_lm_failure(err):
                raise
            return RewardResult(self.failure_reward, feedback=f"reward failed: {type(err).__name__}: {err}",
                                failed=True)

    def score_groups(self, example_index, texts) -> list[RewardResult]:
        """A group reward (group-mode judge, reward model) gets the parsed completions of one example in one call;
        TRL's batch holds whole groups, so each example's G completions are scored together."""
        results: list[RewardResult | None] = [None] * len(texts)
        groups: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for row, (index, text) in enumerate(zip(example_index, texts)):
            try:
                groups[index].append((row, dspy.Prediction(**self.format.parse(self.signature, text))))
            except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
                if not is_lm_failure(err):
                    raise
                results[row] = RewardResult(self.failure_reward, feedback=f"{type(err).__name__}", failed=True)

        def score(index: int) -> None:
            rows = groups[index]
            try:
                scored = score_group(self.reward, self.examples[index], [p for _, p in rows],
                                     failure_score=self.failure_reward)
            except (LMAuthError, LMBillingError) as err:  # as in score()
                raise ProviderRefused(err) from err
            except Exception as err:  # noqa: BLE001 - is_lm_failure below: LM/parse failures counted, bugs re-raised
                if not is_lm_failure(err):
                    raise
                scored = [RewardResult(self.failure_reward, feedback=f"reward failed: {type(err).__name__}: {err}",
                                       failed=True)] * len(rows)
            for (row, _), result in zip(rows, scored):
                results[row] = result

        with ThreadPoolExecutor(self.num_threads) as pool:
            for future in [pool.submit(contextvars.copy_context().run, score, index) for index in groups]:
                future.result()
        return results

    def pop_metrics(self) -> dict:
        """Failure rate and mean reward components of the completions scored since the last call."""
        scored, self._scored = self._scored, []
        return _reward_metrics(scored)


# ----------------------------------------------------------------------------------------------- program mode
class ProgramRollouts:
    """TRL rollout_func: run the whole program on the model being trained and hand TRL one predictor call per row."""

    def __init__(self, program, examples, reward, format, spec: str, tokenizer, cfg: LoraGRPOConfig):
        self.program, self.examples, self.reward_fn, self.format = program, examples, reward, format
        self.spec, self.tokenizer, self.cfg = spec, tokenizer, cfg
        self._engine = self._lm = None
        self._scored: list[RewardResult] = []
        self._per_predictor: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"reward": [], "kl": []})

    def __call__(self, prompts: list[str], trainer) -> dict[str, list]:
        from dspyrl.rollout import run_rollouts

        lm = self._training_lm(trainer)
        rows = [json.loads(p) for p in prompts]
        order = list(dict.fromkeys(row["example"] for row in rows))  # distinct examples, first-seen order
        seen: dict[tuple, int] = defaultdict(int)
        sample = []
        for row in rows:  # the g-th row of (example, predictor) takes that predictor's call in run g
            key = (row["example"], row["predictor"])
            sample.append(seen[key])
            seen[key] += 1
        batch = run_rollouts(self.program, [self.examples[i] for i in order], self.reward_fn,
                             group_size=max(seen.values()), lm=lm, format=self.format,
                             num_threads=self.cfg.num_threads, progress=False, temperature=self.cfg.temperature,
                             cache=False, failure_reward=self.cfg.failure_reward)
        runs = {(order[r.example_index], r.sample_index): r for r in batch.rollouts}
        self._scored.extend(r.reward for r in batch.rollouts)
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "dspyrl_reward": []}
        eos = self.tokenizer.eos_token_id
        for row, g in zip(rows, sample):
            run = runs[(row["example"], g)]
            call = next((c for c in run.calls if c.predictor == row["predictor"] and c.messages and c.completion),
                        None)
            if call is None:  # the run never reached this predictor: a row without reward carries no advantage
                out["prompt_ids"].append(self._engine.encode_chat([{"role": "user", "content": ""}]))
                out["completion_ids"].append([eos])
                out["dspyrl_reward"].append(None)
                continue
            prompt_ids = self._engine.encode_chat(call.messages)
            completion = self._engine.sampled_ids(prompt_ids, call.completion)
            if completion is None:  # the engine did not hand out its tokens: re-tokenize the text
                completion = self.tokenizer(call.completion, add_special_tokens=False)["input_ids"]
                if len(completion) < self.cfg.max_completion_length:  # it stopped by itself: the EOS was part of it
                    completion = completion + [eos]
            out["prompt_ids"].append(prompt_ids)
            out["completion_ids"].append(completion[: self.cfg.max_completion_length])
            out["dspyrl_reward"].append(float(run.reward.total))
            self._per_predictor[row["predictor"]]["reward"].append(float(run.reward.total))
        self._engine.forget_samples()
        reached = [i for i, r in enumerate(out["dspyrl_reward"]) if r is not None]
        kls = completion_kl(self._engine.model, [out["prompt_ids"][i] for i in reached],
                            [out["completion_ids"][i] for i in reached], self.cfg.temperature)
        for i, kl in zip(reached, kls):
            self._per_predictor[rows[i]["predictor"]]["kl"].append(kl)
        return out

    def _training_lm(self, trainer):
        """A dspy.LM over the model TRL is training (the same object: no copy, no reload)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self._engine is None or self._engine.model is not model:
            self._engine = _training_engine(self.spec, model, self.tokenizer, self.cfg.max_completion_length)
            self._lm = dspy.LM(f"local/{self.spec}+training", engine=self._engine, temperature=self.cfg.temperature,
                               max_tokens=self.cfg.max_completion_length, cache=False, num_retries=0)
        return self._lm

    def reward(self, prompts, completions, dspyrl_reward, **kwargs) -> list[float | None]:
        """TRL reward function: the run's reward, computed in the rollout (None: no call of this predictor)."""
        return list(dspyrl_reward)

    reward.__name__ = "program_reward"

    def pop_metrics(self) -> dict:
        """As PredictorReward's, plus each predictor's mean reward and KL to the base model over its calls."""
        scored, self._scored = self._scored, []
        per_predictor, self._per_predictor = self._per_predictor, defaultdict(lambda: {"reward": [], "kl": []})
        metrics = _reward_metrics(scored)
        for key in ("reward", "kl"):
            values = {name: sum(v[key]) / len(v[key]) for name, v in per_predictor.items() if v[key]}
            if values:
                metrics[f"predictor_{key}"] = values
        return metrics


# ----------------------------------------------------------------------------------------------- helpers
def completion_kl(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float) -> list[float]:
    """Per row, TRL's KL estimate (k3: exp(ref - logp) - (ref - logp) - 1, logits / temperature) averaged over the
    completion's tokens, with the LoRA adapter switched off as the reference (TRL's reference for a new adapter).
    TRL logs only the batch mean; this is what splits it per predictor. Empty for a model without an adapter."""
    import torch

    if not hasattr(model, "disable_adapter") or not prompt_ids:
        return []
    scale = temperature if temperature and temperature > 0 else 1.0

    def token_logps(ids: torch.Tensor, start: int) -> torch.Tensor:
        logits = model(input_ids=ids).logits[0, start - 1: -1].float() / scale
        return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, start:, None])[:, 0]

    kls = []
    with torch.no_grad():
        for prompt, completion in zip(prompt_ids, completion_ids):
            ids = torch.tensor([list(prompt) + list(completion)], device=model.device)
            policy = token_logps(ids, len(prompt))
            with model.disable_adapter():
                ref = token_logps(ids, len(prompt))
            delta = ref - policy
            kls.append(float((torch.exp(delta) - delta - 1).mean()))
    return kls


def _training_engine(spec: str, model, tokenizer, max_tokens: int):
    """A LocalEngine over the model being trained that remembers each sampled completion's token ids, so TRL gets the
    tokens that were sampled rather than a re-tokenization of their text (which differs when the model sampled a
    non-canonical split, or bytes that do not decode). It relies on `Generation.token_ids`; an engine without them
    makes `sampled_ids` return None and the caller re-tokenizes."""
    from dspyrl.lm.local import LocalEngine

    class TrainingEngine(LocalEngine):
        def __init__(self):
            super().__init__(spec, loaded=(model, tokenizer), default_max_tokens=max_tokens)
            self._sampled: dict[tuple, list[int]] = {}
            self._sampled_lock = threading.Lock()

        def generate(self, messages, n=1, settings=None):
            generations = super().generate(messages, n, settings)
            prompt = tuple(self.encode_chat(messages))
            with self._sampled_lock:
                for generation in generations:
                    if getattr(generation, "token_ids", None):
                        self._sampled[(prompt, generation.text)] = list(generation.token_ids)
            return generations

        def sampled_ids(self, prompt_ids: list[int], text: str) -> list[int] | None:
            with self._sampled_lock:
                return self._sampled.get((tuple(prompt_ids), text))

        def forget_samples(self) -> None:
            with self._sampled_lock:
                self._sampled.clear()

    return TrainingEngine()


def _reward_metrics(scored: list[RewardResult]) -> dict:
    if not scored:
        return {}
    metrics: dict[str, Any] = {"failure_rate": sum(r.failed for r in scored) / len(scored)}
    components: dict[str, list[float]] = defaultdict(list)
    for result in scored:
        for name, value in result.components.items():
            components[name].append(float(value))
    if components:
        metrics["reward_components"] = {k: sum(v) / len(v) for k, v in components.items()}
    return metrics


def _shuffled(n: int, seed: int) -> list[int]:
    import random

    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


