"""A program's mean reward on a set, one way for every command: `score_program` runs it through the rollout engine
(one greedy run per example) and `summarize` turns the batch into the numbers summary.json and the tables show."""

from __future__ import annotations

from typing import Any


def score_program(program, examples: list, reward, lm=None, *, format=None, num_threads: int = 4,
                  progress: bool = False, failure_reward: float = 0.0, description: str = "scoring",
                  component_names: list[str] | None = None) -> tuple[dict[str, Any], Any]:
    """(summarize(batch), batch) of one run per example; the summary's `score` entry is what summary.json keeps."""
    from dspyrl.rollout import run_rollouts

    batch = run_rollouts(program, examples, reward, lm=lm, format=format, num_threads=num_threads, progress=progress,
                         failure_reward=failure_reward, description=description)
    return summarize(batch, examples, component_names=component_names), batch


def score_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary.json `scores` entry of a summarize() result: score, n, failures, ci95, wall_s."""
    return {"score": summary["mean_reward"], "n": summary["rollouts"], "failures": summary["failures"],
            "ci95": summary["ci95"], "wall_s": summary["wall_s"]}


def summarize(batch, examples, component_names: list[str] | None = None) -> dict[str, Any]:
    """The numbers of one evaluation: mean reward and its 95% interval, components, failures, tokens, cost, time.

    The interval is a seeded percentile bootstrap of the mean: it stays inside the rewards' range (a t-interval of 4
    binary rewards ran from -0.42 to 1.42)."""
    from dspyrl.compare.stats import bootstrap_ci

    rewards = [r.reward.total for r in batch.rollouts]
    n = len(rewards)
    mean = sum(rewards) / n if n else 0.0
    ci95 = list(bootstrap_ci(rewards, seed=0)) if n > 1 else None
    latencies = sorted(r.latency_s for r in batch.rollouts)
    return {
        "examples": len(examples), "rollouts": n, "mean_reward": mean,
        "ci95": ci95,
        "components": batch.component_means(component_names),
        "failures": batch.failures, "failure_rate": batch.failures / n if n else 0.0,
        "reward_failures": batch.reward_failures, "error_types": batch.error_types,
        "lm_calls": batch.lm_calls, "truncated": batch.truncated, "prompt_tokens": batch.prompt_tokens, "completion_tokens": batch.completion_tokens,
        "tokens": batch.prompt_tokens + batch.completion_tokens,
        "cost": batch.cost, "wall_s": batch.wall_s,
        "latency_median_s": latencies[n // 2] if n else 0.0,
        "latency_p90_s": latencies[min(n - 1, int(0.9 * n))] if n else 0.0,
    }
