"""Prompts and weights together, on held-out data: does prompts → LoRA → prompts beat either alone?

On the embedded SmolLM2-135M, for `math_xml` and `iso_date` (both generative, rewards with partial credit), for each
seed, four arms start from the same program at an equal number of TRAINING rollouts R (--rollouts):
    start      the program as shipped (one worked demo)
    prompts    dspyrl.GRPO, max_metric_calls = R + its two validation passes (start, end)
    lora       dspyrl.LoraGRPO, R / G steps of G samples (+ one greedy valset pass before and after)
    p→w→p      dspyrl.Schedule: prompts (R/4 + validation) → LoRA (R/2 rollouts) → prompts (R/4 + validation), the
               best phase on the valset kept (BetterTogether's rule)
Validation runs are counted apart from R in every arm (GRPO's budget includes them, so it gets 2·|val| more): the
arms then differ in how they spend R training rollouts, not in how often they look at the valset.
Every arm is scored on the same held-out test rows, greedy and sampled (T=1, one sample per row); the schedule is
compared with the better single arm (by greedy mean) in a paired test over (seed, test row) pairs
(dspyrl.compare.stats.paired_statistics). Each phase's wall time is printed; a PNG shows test reward per arm and the
schedule's validation reward after each phase. Results go to --out/together.json, one cell (program, seed, arm) at a
time, and a rerun with the same --out skips finished cells (so an interrupted run continues).

This is a small-budget measurement, scaled to a 2-core machine shared with other jobs: the defaults (R=16, 10 test rows,
3 validation rows, 2 seeds, no instruction proposals) take roughly 20–40 minutes; the table says the scale it ran at.

    flock /tmp/dspyrl-bench.lock .venv/bin/python benchmarks/together.py --torch-threads 1
    .venv/bin/python benchmarks/together.py --programs iso_date --seeds 0 --rollouts 16      # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = ("start", "prompts", "lora", "p→w→p")
G = 4  # LoRA group size (samples per prompt); also the prompt policy's group size
MAX_TOKENS = {"math_xml": 64, "iso_date": 24}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", default="math_xml,iso_date")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rollouts", type=int, default=16, help="training rollouts per arm, R (default: %(default)s)")
    parser.add_argument("--test-rows", type=int, default=10)
    parser.add_argument("--val-rows", type=int, default=3)
    parser.add_argument("--model", default="smollm2", help="the local model (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--out", default="runs/bench-together")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    import dspy

    # every arm pays for its own LM calls: with DSPy's cache on, an arm replaying another's (same prompt, same rollout
    # id) would report a wall time of nothing
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "together.json"
    cells = json.loads(results_file.read_text()) if results_file.exists() else {}
    scale = {"rollouts": args.rollouts, "test_rows": args.test_rows, "val_rows": args.val_rows, "G": G,
             "lr": args.lr, "model": args.model}
    for seed in map(int, args.seeds.split(",")):  # seed-major: an interrupted run still has every program once
        for program_name in args.programs.split(","):
            for arm in ARMS:
                key = f"{program_name}/{seed}/{arm}"
                if key in cells and cells[key].get("scale") == scale:
                    continue
                started = time.perf_counter()
                try:
                    cell = run_arm(program_name, seed, arm, args, out / key.replace("→", "-").replace("/", "_"))
                except Exception as err:  # a crash is a row of the table, not the end of the benchmark
                    cell = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
                cell.update(scale=scale, wall_s=round(time.perf_counter() - started, 1))
                cells[key] = cell
                results_file.write_text(json.dumps(cells, indent=1, ensure_ascii=False))
                print(f"{key}: {_short(cell)}", flush=True)
    report(cells, args, out)


# ----------------------------------------------------------------------------------------------- one arm
def run_arm(program_name: str, seed: int, arm: str, args, folder: Path) -> dict:
    import shutil

    import dspy

    from dspyrl.data import split_examples
    from dspyrl.formats import CompactAdapter
    from dspyrl.lm import local_lm
    from dspyrl.optim.prompts.grpo import GRPO, GRPOConfig
    from dspyrl.optim.schedule import Schedule
    from dspyrl.optim.weights.grpo import LoraGRPO, LoraGRPOConfig
    from dspyrl.program_file import load_program_file

    shutil.rmtree(folder, ignore_errors=True)
    spec = load_program_file(program_name)
    train, val, test = split_examples(spec.load_examples(), seed=0)  # the same held-out rows for every seed and arm
    val, test = val[: args.val_rows], test[: args.test_rows]
    reward, program = spec.build_reward(), spec.build_program()
    format = CompactAdapter()  # SmolLM2 follows it; DSPy's ChatAdapter markers defeat a 135M model (lora_grpo.py)
    max_tokens = MAX_TOKENS.get(program_name, 64)
    lm = local_lm(args.model, max_tokens=max_tokens)
    R = args.rollouts
    # no instruction proposals: the 135M model's own proposals are mostly noise (DESIGN.md), and they cost LM calls
    # that are not rollouts; the policy chooses among the instruction, labelled demo sets and bootstrapped demos
    val_cost = 2 * len(val)  # GRPO's start and end validation, inside its budget
    prompts_config = GRPOConfig(max_metric_calls=R + val_cost, group_size=G, batch_size=2, propose_every=0, learn_format=False,
                                val_minibatch=args.val_rows, num_threads=4, seed=seed, temperature=1.0)
    lora_config = LoraGRPOConfig(steps=max(1, R // G), num_generations=G, learning_rate=args.lr, beta=0.0,
                                 max_completion_length=max_tokens, save_every=0, seed=seed, num_threads=4)
    phases: list[dict] = []
    if arm == "start":
        optimized, phase_lm = program, lm
    elif arm == "prompts":
        t = time.perf_counter()
        optimizer = GRPO(reward, prompts_config, lm=lm, run_dir=folder, progress=False)
        with dspy.context(adapter=format):
            optimized = optimizer.compile(program, trainset=train, valset=val)
        phases.append({"phase": "prompts", "wall_s": time.perf_counter() - t,
                       "rollouts": optimizer.state.metric_calls - val_cost, "val_rollouts": val_cost})
        phase_lm = lm
    elif arm == "lora":
        t = time.perf_counter()
        optimizer = LoraGRPO(reward, lora_config, lm=lm, format=format, run_dir=folder, progress=False)
        optimized = optimizer.compile(program, trainset=train, valset=val)
        phases.append({"phase": "lora", "wall_s": time.perf_counter() - t, "rollouts": lora_config.steps * G,
                       "val_rollouts": 2 * len(val), "train_wall_s": optimizer.result.train_wall_s})
        phase_lm = lm  # the adapted LM rides on the program when a weights phase won; else the start LM
    else:
        quarter = max(G, R // 4)
        schedule = Schedule(reward, [("prompts", {"max_metric_calls": quarter + val_cost}),
                                     ("lora", {"steps": max(1, (R - 2 * quarter) // G)}),
                                     ("prompts", {"max_metric_calls": quarter + val_cost})],
                            lm=lm, format=format, prompts=prompts_config, lora=lora_config, run_dir=folder,
                            progress=False)
        run_phase = schedule._run_phase  # timed per phase (the schedule records scores, not times)

        def timed(phase, *a, **k):
            t = time.perf_counter()
            result = run_phase(phase, *a, **k)
            phases.append({"phase": phase.kind, "wall_s": time.perf_counter() - t, "val_before": result[0],
                           "val_after": result[2]})
            return result

        schedule._run_phase = timed
        optimized = schedule.compile(program, trainset=train, valset=val)
        record = json.loads((folder / "checkpoint.json").read_text())
        for phase, done in zip(phases, schedule.phases_done):
            phase["rollouts"] = _phase_rollouts(folder / done["dir"], done["kind"], val_cost)
        phase_lm = lm  # the adapted LM rides on the program when a weights phase won; else the start LM
        phases.append({"best_phase": record.get("best_phase")})
    test_scores = score(optimized, phase_lm, test, reward, format, seed)
    return {"test": test_scores, "phases": phases, "train_rows": len(train), "val_rows": len(val),
            "test_rows": len(test)}


def _phase_rollouts(folder: Path, kind: str, val_cost: int) -> int | None:
    """Training rollouts a schedule phase used, from its run folder (validation runs not counted)."""
    try:
        config = json.loads((folder / "config.json").read_text())
        state = json.loads((folder / "checkpoint.json").read_text())
    except FileNotFoundError:
        return None
    if kind == "prompts":
        calls = state.get("metric_calls", state.get("state", {}).get("metric_calls"))
        return None if calls is None else int(calls) - val_cost
    return int(config.get("steps", 0)) * int(config.get("num_generations", G))


def score(program, lm, test, reward, format, seed: int) -> dict:
    """Per-row test rewards, greedy and sampled (T=1, one sample per row), on the LM the program runs on."""
    from dspyrl.optim.weights.base import program_lm, without_lms
    from dspyrl.rollout import run_rollouts

    run_lm, plain = program_lm(program, lm), without_lms(program)
    rows = {}
    for name, temperature in (("greedy", 0.0), ("sampled", 1.0)):
        batch = run_rollouts(plain, test, reward, lm=run_lm, format=format, num_threads=4, progress=False,
                             temperature=temperature, cache=False, seed=seed)
        ordered = sorted(batch.rollouts, key=lambda r: r.example_index)
        rows[name] = {"rewards": [float(r.reward.total) for r in ordered], "failures": batch.failures,
                      "mean": batch.mean_reward(), **{f"mean_{k}": v for k, v in batch.component_means().items()}}
    return rows


# ----------------------------------------------------------------------------------------------- the table
def report(cells: dict, args, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from dspyrl.compare.stats import paired_statistics

    console = Console()
    programs, seeds = args.programs.split(","), list(map(int, args.seeds.split(",")))
    table = Table(title=f"SmolLM2-135M, CPU: test reward (mean over {len(seeds)} seed(s) × {args.test_rows} held-out "
                        f"rows), R={args.rollouts} training rollouts per arm, {args.val_rows} validation rows")
    for column in ("program", "arm", "greedy", "sampled T=1", "per seed (greedy)", "train rollouts",
                   "wall s (phases)"):
        table.add_column(column, justify="right")
    verdicts = []
    for program_name in programs:
        means = {}
        for arm in ARMS:
            got = [cells.get(f"{program_name}/{s}/{arm}", {}) for s in seeds]
            if any("error" in c or "test" not in c for c in got):
                errors = "; ".join(c.get("error", "not run") for c in got if "test" not in c)
                table.add_row(program_name, arm, "—", "—", errors[:60], "", "")
                continue
            greedy = [statistics.mean(c["test"]["greedy"]["rewards"]) for c in got]
            sampled = [statistics.mean(c["test"]["sampled"]["rewards"]) for c in got]
            means[arm] = statistics.mean(greedy)
            rollouts = [sum(p.get("rollouts") or 0 for p in c["phases"]) for c in got]
            walls = " / ".join("+".join(f"{p['wall_s']:.0f}" for p in c["phases"] if "wall_s" in p) or "0"
                               for c in got)
            table.add_row(program_name, arm, f"{statistics.mean(greedy):.3f}", f"{statistics.mean(sampled):.3f}",
                          " ".join(f"{g:.2f}" for g in greedy), "/".join(map(str, rollouts)), walls)
        singles = {arm: means[arm] for arm in ("prompts", "lora") if arm in means}
        if "p→w→p" in means and singles:
            best = max(singles, key=singles.get)
            a = [r for s in seeds for r in cells[f"{program_name}/{s}/{best}"]["test"]["greedy"]["rewards"]]
            b = [r for s in seeds for r in cells[f"{program_name}/{s}/p→w→p"]["test"]["greedy"]["rewards"]]
            stats = paired_statistics(a, b, names=(best, "p→w→p"))
            verdicts.append(f"{program_name}: p→w→p {statistics.mean(b):.3f} vs {best} {statistics.mean(a):.3f} "
                            f"(greedy, {len(a)} paired rows): diff {stats.mean_diff:+.3f}, "
                            f"{stats.confidence:.0%} CI [{stats.ci_low:+.3f}, {stats.ci_high:+.3f}], "
                            f"{stats.test} p={stats.p_value:.3g}")
    console.print(table)
    for line in verdicts:
        console.print(line)
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    png = out / "together.png"
    _plot(cells, programs, seeds, png)
    console.print(f"numbers: {out / 'together.json'}   plot: {png}")


def _plot(cells: dict, programs: list[str], seeds: list[int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(programs), figsize=(5 * len(programs), 7), squeeze=False)
    for column, program_name in enumerate(programs):
        ax = axes[0][column]
        for x, arm in enumerate(ARMS):
            values = [statistics.mean(c["test"]["greedy"]["rewards"]) for s in seeds
                      if "test" in (c := cells.get(f"{program_name}/{s}/{arm}", {}))]
            if values:
                ax.bar(x, statistics.mean(values), color="#9bb7d4")
                ax.plot([x] * len(values), values, "o", color="#1f4e79")
        ax.set_xticks(range(len(ARMS)), ARMS)
        ax.set_title(f"{program_name}: held-out test reward (greedy)")
        ax.set_ylim(0, 1)
        ax = axes[1][column]
        for s in seeds:
            cell = cells.get(f"{program_name}/{s}/p→w→p", {})
            phases = [p for p in cell.get("phases", []) if "val_after" in p]
            if phases:
                ys = [phases[0]["val_before"]] + [p["val_after"] for p in phases]
                ax.plot(range(len(ys)), ys, "o-", label=f"seed {s}")
        ax.set_xticks(range(4), ["start", "prompts", "+LoRA", "+prompts"])
        ax.set_title(f"{program_name}: p→w→p validation reward per phase")
        ax.set_ylim(0, 1)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def _short(cell: dict) -> str:
    if "error" in cell:
        return "ERROR " + cell["error"]
    return (f"test greedy {cell['test']['greedy']['mean']:.3f}, sampled {cell['test']['sampled']['mean']:.3f}, "
            f"{cell['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
