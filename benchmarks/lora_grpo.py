"""LoRA GRPO on the embedded SmolLM2-135M-Instruct, on CPU: does the reward move, and what do we cost over raw TRL?

(a) curve:    `dspyrl.LoraGRPO` on the `math_xml` program (XML format 0.2 + correct answer 0.8, one worked example as a
              demo) for --steps steps; the held-out test split is scored before and after (greedy, and 2 samples per
              row at the training temperature), the per-step training reward is printed and drawn to a PNG.
(b) overhead: the same TRL GRPOConfig + LoRA config on the same model and the same prompts, run by a raw TRL script
              and by dspyrl.LoraGRPO, each in its own process (so peak RSS is each one's own), alternating
              --rounds times; prints step time, time per completion token, peak memory as ours / raw ratios, and
              both runs' mean training reward. Ours shares each prompt across its group of G samples (one prefill,
              G decodes; one prompt forward in the loss: dspyrl/optim/weights/shared_prompt.py); raw TRL runs the
              G copies of the prompt through the model, in generation and in the loss.

The prompts are the program's predictor formatted by a DSPy adapter. The default is dspyrl's CompactAdapter: with
DSPy's ChatAdapter (`[[ ## field ## ]]` markers, a ~300-token prompt) SmolLM2 sampled at temperature 1.0 wrote no
parseable reply in the first steps we ran (failure rate 1.0, reward 0 for every sample: GRPO has no signal), while
with the compact layout it imitates the demo's `<reasoning>…</reasoning><answer>…</answer>` often enough to learn
from — the prompts-first lesson of DESIGN.md, with the format as the prompt-side choice.

    .venv/bin/python benchmarks/lora_grpo.py --torch-threads 1             # both (~15 min on 2 idle CPU threads)
    .venv/bin/python benchmarks/lora_grpo.py --part curve --steps 40 --lr 5e-4
    .venv/bin/python benchmarks/lora_grpo.py --part overhead --overhead-steps 8 --rounds 2

Timings on a shared machine move with the neighbours' load (the run prints the load average); (b) alternates the two
so drift hits both. On an oversubscribed machine, --torch-threads 1 is much faster than torch's default (OpenMP
threads wait on each other at every matmul when the cores are taken).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# One TRL configuration for everything here: DESIGN.md's measured raw-TRL setup (r=16 all-linear, lr 3e-4,
# one prompt × 4 samples per step), with room for the ChatAdapter's field markers around the XML answer.
TRL = {"num_generations": 4, "per_device_train_batch_size": 4, "learning_rate": 3e-4, "beta": 0.0, "epsilon": 0.2,
       "loss_type": "dapo", "scale_rewards": "group", "temperature": 1.0, "max_completion_length": 64, "seed": 0,
       "gradient_checkpointing": False}  # as LoraGRPO sets it when it shares prompts: the identical config for both
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "curve", "overhead"), default="all")
    parser.add_argument("--steps", type=int, default=40, help="(a) training steps (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=5e-4, help="(a) learning rate (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="(a) sampling temperature (default: %(default)s)")
    parser.add_argument("--format", choices=("compact", "chat"), default="compact",
                        help="format of the prompts (default: %(default)s; see the module docstring)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch CPU threads in every process (default: torch's; 1 is faster on a loaded machine)")
    parser.add_argument("--overhead-steps", type=int, default=8, help="(b) steps per timed run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="(b) raw/ours alternations (default: %(default)s)")
    parser.add_argument("--out", default="runs/bench-lora-grpo", help="where runs, JSON results and the PNG go")
    parser.add_argument("--worker", choices=("raw", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # inherited by the worker processes of (b)
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.worker:
        return _worker(args.worker, json.loads(Path(args.job).read_text()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "curve"):
        curve(args.steps, args.lr, args.temperature, args.format, out)
    if args.part in ("all", "overhead"):
        overhead(args.overhead_steps, args.rounds, args.temperature, args.format, out)


# ----------------------------------------------------------------------------------------------- (a) the curve
def curve(steps: int, lr: float, temperature: float, format_name: str, out: Path) -> dict:
    from rich.console import Console
    from rich.table import Table

    from dspyrl.data import split_examples
    from dspyrl.lm import local_lm
    from dspyrl.optim.weights.grpo import LoraGRPO
    from dspyrl.optim.weights.base import program_lm, without_lms
    from dspyrl.rollout import run_rollouts
    from dspyrl_programs import math_xml

    console = Console()
    train, _, test = split_examples(math_xml.load_examples(), seed=0)
    reward, program = math_xml.build_reward(), math_xml.build_program()
    format = _format(format_name)
    lm = local_lm("smollm2", max_tokens=TRL["max_completion_length"])

    def score(prog) -> dict:
        """Held-out test split: one greedy run per row, and 2 runs per row at the training temperature."""
        prog_lm, prog = program_lm(prog), without_lms(prog)  # so run_rollouts' temperature reaches the LM
        rows = {}
        for name, group, temp in (("greedy", 1, 0.0), ("sampled", 2, temperature)):
            batch = run_rollouts(prog, test, reward, group_size=group, lm=prog_lm, format=format, num_threads=4,
                                 progress=False, temperature=temp, cache=False)
            rows[name] = {"reward": batch.mean_reward(), **batch.component_means(), "failures": batch.failures,
                          "n": len(batch.rollouts), "wall_s": round(batch.wall_s, 1)}
        return rows

    run_dir = out / f"curve-{time.strftime('%Y%m%d-%H%M%S')}"
    console.print(f"[bold](a)[/bold] LoRA GRPO on SmolLM2 / math_xml ({format_name} format, temperature "
                  f"{temperature}): {len(train)} train / {len(test)} test rows, {steps} steps, lr {lr}, "
                  f"{_threads()} torch thread(s), run folder {run_dir}")
    started = time.perf_counter()
    program.set_lm(lm)
    before = score(program)
    optimizer = LoraGRPO(reward, lm=lm, format=format, run_dir=run_dir, steps=steps,
                         num_generations=TRL["num_generations"], prompts_per_step=1, learning_rate=lr,
                         beta=TRL["beta"], temperature=temperature, max_completion_length=TRL["max_completion_length"],
                         lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"], save_every=10, seed=0)
    optimized = optimizer.compile(program, trainset=train)
    after = score(optimized)
    total_s = time.perf_counter() - started

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["reward_mean"] for m in metrics]
    table = Table(title=f"training reward (mean of the {TRL['num_generations']} samples of each step), 10-step windows")
    for column in ("steps", "reward", "format", "correct", "unparseable", "frac_zero_std", "s/step"):
        table.add_column(column, justify="right")
    for first in range(0, len(metrics), 10):
        window = metrics[first:first + 10]
        comp = [m.get("reward_components", {}) for m in window]
        table.add_row(f"{first + 1}-{first + len(window)}", f"{_mean(m['reward_mean'] for m in window):.3f}",
                      f"{_mean(c.get('format', 0) for c in comp):.3f}", f"{_mean(c.get('correct', 0) for c in comp):.3f}",
                      f"{_mean(m.get('failure_rate', 0) for m in window):.2f}",
                      f"{_mean(m.get('frac_zero_std', 0) for m in window):.2f}",
                      f"{_mean(m.get('step_time', 0) for m in window):.1f}")
    console.print(table)
    summary = Table(title="held-out test split, SmolLM2 + math_xml")
    for column in ("", "decoding", "reward", "format", "correct", "unparseable"):
        summary.add_column(column, justify="right")
    for name, rows in (("before", before), ("after LoRA GRPO", after)):
        for decoding, row in rows.items():
            summary.add_row(name, decoding if decoding == "greedy" else f"T={temperature} ×2", f"{row['reward']:.3f}",
                            f"{row.get('format', 0):.3f}", f"{row.get('correct', 0):.3f}",
                            f"{row['failures']}/{row['n']}")
    console.print(summary)
    result = {"steps": steps, "lr": lr, "temperature": temperature, "format": format_name,
              "torch_threads": _threads(), "test_before": before, "test_after": after,
              "train_wall_s": round(optimizer.result.train_wall_s, 1), "total_wall_s": round(total_s, 1),
              "reward_curve": rewards, "run_dir": str(run_dir), "load_average": os.getloadavg()}
    console.print(f"training {result['train_wall_s']:.0f} s for {steps} steps; whole run (scoring before and after "
                  f"included) {total_s:.0f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    png = out / "lora_grpo_curve.png"
    _plot(rewards, metrics, png)
    result["png"] = str(png)
    (out / "curve.json").write_text(json.dumps(result, indent=1))
    console.print(f"curve: {png}   numbers: {out / 'curve.json'}")
    return result


def _plot(rewards: list[float], metrics: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(rewards) + 1))
    window = 10
    smooth = [_mean(rewards[max(0, i - window + 1): i + 1]) for i in range(len(rewards))]
    fmt = [m.get("reward_components", {}).get("format", float("nan")) for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, rewards, ".", alpha=0.35, label="reward (step mean)")
    ax.plot(steps, smooth, "-", label=f"reward ({window}-step mean)")
    ax.plot(steps, [_mean(fmt[max(0, i - window + 1): i + 1]) for i in range(len(fmt))], "--",
            label=f"format component ({window}-step mean)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.set_title("LoRA GRPO on SmolLM2-135M (CPU), math_xml")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


# ----------------------------------------------------------------------------------------------- (b) overhead
def overhead(steps: int, rounds: int, temperature: float, format_name: str, out: Path) -> dict:
    from rich.console import Console
    from rich.table import Table

    from dspyrl.data import split_examples
    from dspyrl.lm.models import resolve_model_path
    from dspyrl.optim.weights.grpo import predictor_messages
    from dspyrl_programs import math_xml

    console = Console()
    train, _, _ = split_examples(math_xml.load_examples(), seed=0)
    program = math_xml.build_program()
    predictor = next(p for _, p in program.named_predictors())
    job = {"model_dir": str(resolve_model_path("smollm2")), "steps": steps, "trl": {**TRL, "temperature": temperature},
           "lora": LORA, "format": format_name, "answers": [ex.answer for ex in train],
           "prompts": [predictor_messages(predictor, _format(format_name), ex) for ex in train]}
    job_file = out / "overhead_job.json"
    job_file.write_text(json.dumps(job))
    console.print(f"[bold](b)[/bold] step time and peak memory, raw TRL vs dspyrl.LoraGRPO: {steps} steps each, "
                  f"{rounds} alternating rounds, one process per run")
    runs = {"raw": [], "ours": []}
    for round_index in range(rounds):
        for kind in ("raw", "ours"):
            job["run_dir"] = str(out / f"overhead-{kind}-{round_index}-{time.strftime('%H%M%S')}")
            job_file.write_text(json.dumps(job))
            proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--job", str(job_file)],
                                  capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                console.print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"{kind} worker failed (exit {proc.returncode})")
            result = json.loads(lines[-1].removeprefix("RESULT "))
            runs[kind].append(result)
            console.print(f"  round {round_index + 1} {kind:>4}: median step {result['median_step_s']:.2f} s "
                          f"(generation {result['median_generation_s']:.2f} s), "
                          f"{result['tokens_per_s']:.1f} completion tok/s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                          f"process wall {result['process_wall_s']:.0f} s")
    agg = {kind: {"median_step_s": statistics.median(r["median_step_s"] for r in rs),
                  "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                  "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                  "process_wall_s": statistics.median(r["process_wall_s"] for r in rs),
                  "mean_reward": _mean(r["mean_reward"] for r in rs),
                  "median_generation_s": statistics.median(r["median_generation_s"] for r in rs)}
           for kind, rs in runs.items()}
    # each round's ours/raw ratio compares two neighbouring runs: load drift on a shared machine cancels better than
    # in a ratio of medians taken across rounds
    per_round = [o["median_step_s"] / r["median_step_s"] for r, o in zip(runs["raw"], runs["ours"])]
    ratios = {"step_time": statistics.median(per_round), "step_time_per_round": per_round,
              "time_per_completion_token": agg["raw"]["tokens_per_s"] / agg["ours"]["tokens_per_s"],
              "peak_rss": agg["ours"]["peak_rss_mb"] / agg["raw"]["peak_rss_mb"],
              "process_wall": agg["ours"]["process_wall_s"] / agg["raw"]["process_wall_s"]}
    table = Table(title=f"SmolLM2-135M, CPU ({os.cpu_count()} cores), batch 4 (1 prompt × 4), "
                        f"{TRL['max_completion_length']} new tokens, LoRA r={LORA['r']} all-linear, {steps} steps")
    for column in ("", "raw TRL", "dspyrl.LoraGRPO", "ours / raw"):
        table.add_column(column, justify="right")
    table.add_row("median step time", f"{agg['raw']['median_step_s']:.2f} s", f"{agg['ours']['median_step_s']:.2f} s",
                  f"{ratios['step_time']:.2f}× (median of rounds: {', '.join(f'{x:.2f}' for x in per_round)})")
    table.add_row("  of which generation", f"{agg['raw']['median_generation_s']:.2f} s",
                  f"{agg['ours']['median_generation_s']:.2f} s",
                  f"{agg['ours']['median_generation_s'] / agg['raw']['median_generation_s']:.2f}×")
    table.add_row("time per completion token", f"{1 / agg['raw']['tokens_per_s']:.3f} s",
                  f"{1 / agg['ours']['tokens_per_s']:.3f} s", f"{ratios['time_per_completion_token']:.2f}×")
    table.add_row("peak RSS", f"{agg['raw']['peak_rss_mb']:.0f} MB", f"{agg['ours']['peak_rss_mb']:.0f} MB",
                  f"{ratios['peak_rss']:.2f}×")
    table.add_row("mean training reward (same seeds)", f"{agg['raw']['mean_reward']:.3f}",
                  f"{agg['ours']['mean_reward']:.3f}", "")
    table.add_row("process wall (load + train + save)", f"{agg['raw']['process_wall_s']:.0f} s",
                  f"{agg['ours']['process_wall_s']:.0f} s", f"{ratios['process_wall']:.2f}×")
    console.print(table)
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    result = {"steps": steps, "rounds": rounds, "torch_threads": _threads(), "runs": runs, "median": agg, "ratios": ratios}
    (out / "overhead.json").write_text(json.dumps(result, indent=1))
    return result


def _worker(kind: str, job: dict) -> None:
    """One timed training run in this process; prints one RESULT line."""
    import trl

    generation_s: list[float] = []  # TRL's _generate per step (both paths go through it): generation vs the rest
    generate = trl.GRPOTrainer._generate

    def timed_generate(self, prompts):
        t = time.perf_counter()
        try:
            return generate(self, prompts)
        finally:
            generation_s.append(time.perf_counter() - t)

    trl.GRPOTrainer._generate = timed_generate
    started = time.perf_counter()
    if kind == "raw":
        log = _raw_trl(job)
    else:
        log = _ours(job)
    steps = [e for e in log if "step_time" in e]
    timed = [e["step_time"] for e in steps[1:]] or [e["step_time"] for e in steps]  # the first step warms caches
    tokens = sum(e["completions/mean_length"] * job["trl"]["num_generations"] for e in steps[1:])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    rewards = [e.get("reward", e.get("reward_mean")) for e in steps]
    print("RESULT " + json.dumps({"median_step_s": statistics.median(timed), "tokens_per_s": tokens / sum(timed),
                                  "mean_reward": _mean(rewards), "reward_curve": rewards,
                                  "median_generation_s": statistics.median(generation_s[1:] or generation_s),
                                  "peak_rss_mb": peak_mb, "process_wall_s": time.perf_counter() - started,
                                  "steps": len(steps)}))


def _raw_trl(job: dict) -> list[dict]:
    """What a TRL user writes by hand: the prompts as a dataset, a regex reward, GRPOTrainer + LoraConfig."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype="float32")
    dataset = Dataset.from_list([{"prompt": p, "answer": a} for p, a in zip(job["prompts"], job["answers"])])

    def reward(completions, answer, **kwargs):
        scores = []
        for completion, gold in zip(completions, answer):
            text = completion[-1]["content"]
            if job["format"] == "chat":
                found = re.search(r"\[\[ ## response ## \]\]\s*(.*?)\s*(?:\[\[ ## completed ## \]\]|$)", text, re.DOTALL)
            else:
                found = re.search(r"response:\s*(.*)", text, re.DOTALL | re.IGNORECASE)
            body = found.group(1) if found else ""
            tags = [re.search(rf"<{t}>(.+?)</{t}>", body, re.DOTALL) for t in ("reasoning", "answer")]
            fmt = sum(1 for t in tags if t and t.group(1).strip()) / 2 if found else 0.0
            numbers = re.findall(r"-?\d+(?:\.\d+)?", tags[1].group(1)) if tags[1] else []
            correct = float(bool(numbers) and abs(float(numbers[-1]) - gold) < 1e-6)
            scores.append(0.2 * fmt + 0.8 * correct)
        return scores

    args = GRPOConfig(output_dir=job["run_dir"], max_steps=job["steps"], logging_steps=1, save_strategy="no",
                      report_to=[], disable_tqdm=True, use_cpu=True, bf16=False, **job["trl"])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=LoraConfig(task_type="CAUSAL_LM", **job["lora"]))
    trainer.train()
    trainer.model.save_pretrained(Path(job["run_dir"]) / "adapter")
    return trainer.state.log_history


def _ours(job: dict) -> list[dict]:
    """The same run through dspyrl: math_xml's program and reward, LoraGRPO with the same settings."""
    from dspyrl.data import split_examples
    from dspyrl.lm import local_lm
    from dspyrl.optim.weights.grpo import LoraGRPO
    from dspyrl_programs import math_xml

    train, _, _ = split_examples(math_xml.load_examples(), seed=0)
    trl = job["trl"]
    lm = local_lm(job["model_dir"], max_tokens=trl["max_completion_length"])
    optimizer = LoraGRPO(math_xml.build_reward(), lm=lm, format=_format(job["format"]), run_dir=job["run_dir"],
                         steps=job["steps"], num_generations=trl["num_generations"],
                         prompts_per_step=trl["per_device_train_batch_size"] // trl["num_generations"],
                         learning_rate=trl["learning_rate"], beta=trl["beta"], epsilon=trl["epsilon"],
                         loss_type=trl["loss_type"], scale_rewards=trl["scale_rewards"], temperature=trl["temperature"],
                         max_completion_length=trl["max_completion_length"], lora_r=job["lora"]["r"],
                         lora_alpha=job["lora"]["lora_alpha"], lora_dropout=job["lora"]["lora_dropout"],
                         target_modules=job["lora"]["target_modules"], seed=trl["seed"], progress=False)
    optimizer.compile(math_xml.build_program(), trainset=train)
    return [json.loads(line) for line in (Path(job["run_dir"]) / "metrics.jsonl").read_text().splitlines()]


def _format(name: str):
    import dspy

    from dspyrl.formats import CompactAdapter

    return CompactAdapter() if name == "compact" else dspy.ChatAdapter()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _mean(values) -> float:
    values = [v for v in values if isinstance(v, (int, float)) and v == v]
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
