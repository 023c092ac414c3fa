"""One self-contained HTML report for a run folder: a comparison (`comparison.json`) or a GRPO / eval run (`metrics.jsonl`).

The report is rebuilt from the JSON in the folder alone, so `dspyrl report RUN_DIR` can regenerate it at any time.
Plots are matplotlib PNGs (Agg, through `Figure` objects rather than pyplot, so it is safe from worker threads),
embedded as base64 `data:` URIs and also written beside the report. Every piece of user text goes through
`html.escape`; the page has no scripts and loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from dspyrl.errors import ConfigError, DataError
from dspyrl.runs import (COMPARISON as COMPARISON_FILE, METRICS as METRICS_FILE, PLOTS, REPORT as REPORT_FILE,
                         RESULTS as RESULTS_FILE, SUMMARY as SUMMARY_FILE, flatten_metrics, write_text_atomic)

MOST_DIFFERENT = 12  # examples shown side by side

_COLOR_A, _COLOR_B = "#4c72b0", "#dd8452"


def write_report(run_dir: str | Path) -> Path:
    """Detect what kind of run folder this is and (re)write its `report.html`; returns the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist")
    if (run_dir / COMPARISON_FILE).is_file():
        return write_comparison_report(run_dir)
    if (run_dir / METRICS_FILE).is_file():
        return write_run_report(run_dir)
    if (run_dir / RESULTS_FILE).is_file() and (run_dir / SUMMARY_FILE).is_file():
        return write_eval_report(run_dir)
    raise ConfigError(f"{run_dir} has none of {COMPARISON_FILE}, {METRICS_FILE} or {RESULTS_FILE}",
                      hint="pass a folder written by `dspyrl compare`, `optimize`, `finetune` or `eval`")


# ----------------------------------------------------------------------------------------------- plots
def _figure(width: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def paired_scatter_png(a, b, names: tuple[str, str] = ("A", "B"), seed: int = 0) -> bytes:
    """Per-example score under A (x) against B (y). Binary scores are jittered and each cell is labelled with its count."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    fig = _figure()
    ax = fig.add_subplot()
    binary = bool(np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all())
    if binary:
        rng = np.random.default_rng(seed)
        ax.scatter(a + rng.uniform(-0.15, 0.15, len(a)), b + rng.uniform(-0.15, 0.15, len(b)), s=14, alpha=0.6,
                   c=np.where(b > a, _COLOR_B, np.where(a > b, _COLOR_A, "grey")))
        for x in (0, 1):
            for y in (0, 1):
                count = int(((a == x) & (b == y)).sum())
                ax.annotate(f"n={count}", (x, y + 0.24), ha="center", fontsize=10, weight="bold")
        ax.set_xticks([0, 1])
        ax.set_yticks([0, 1])
        ax.set_xlim(-0.4, 1.4)
        ax.set_ylim(-0.4, 1.5)
    else:
        ax.scatter(a, b, s=16, alpha=0.7, c=np.where(b > a, _COLOR_B, np.where(a > b, _COLOR_A, "grey")))
    low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([low, high], [low, high], color="black", lw=0.8, ls="--", label="equal score")
    ax.set_xlabel(f"score under {names[0]}")
    ax.set_ylabel(f"score under {names[1]}")
    ax.set_title(f"per-example scores (above the line: {names[1]} better)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def difference_histogram_png(diff, mean: float, ci: tuple[float, float], names: tuple[str, str] = ("A", "B")) -> bytes:
    """Histogram of per-example differences B − A, with the mean and its bootstrap CI shaded."""
    diff = np.asarray(diff, float)
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    values = np.unique(diff)
    if len(values) <= 11:  # few distinct differences (binary scores give -1, 0, 1): one bar per value
        counts = [(diff == v).sum() for v in values]
        width = 0.8 * (np.min(np.diff(values)) if len(values) > 1 else 1.0)
        ax.bar(values, counts, width=width, color="#8c8c8c", edgecolor="black")
    else:
        ax.hist(diff, bins=min(30, max(10, len(diff) // 5)), color="#8c8c8c", edgecolor="black")
    ax.axvspan(ci[0], ci[1], color=_COLOR_B, alpha=0.25, label=f"95% CI of the mean [{ci[0]:.3g}, {ci[1]:.3g}]")
    ax.axvline(mean, color=_COLOR_B, lw=2, label=f"mean difference {mean:+.3g}")
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_xlabel(f"score difference {names[1]} − {names[0]} per example")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    return _png(fig)


def metric_curves_png(rows: list[dict], keys: list[str], title: str) -> bytes:
    """One line per metric against the step (or row number when rows carry no step)."""
    fig = _figure(6.5, 4.0)
    ax = fig.add_subplot()
    for key in keys:
        points = [(row.get("step", i), row[key]) for i, row in enumerate(rows) if _is_number(row.get(key))]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) < 40 else None, ms=3, label=key)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------------------- HTML pieces
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.verdict { font-size: 1.25em; font-weight: 600; padding: 0.7em 1em; border-radius: 6px; background: #eef4ff; }
.verdict.none { background: #f2f2f2; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { max-width: 48%; margin-right: 1%; border: 1px solid #eee; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.6em; }
.pair pre, pre.inputs { white-space: pre-wrap; word-break: break-word; background: #fafafa; padding: 0.5em; margin: 0.2em 0; }
.example { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; margin: 0.8em 0; }
.better { outline: 2px solid #55a868; } .muted { color: #777; font-size: 0.9em; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"  # 3,210 s, not 3.21e+03
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_e(_fmt(c))}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                         else f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


def _text_block(value) -> str:
    if isinstance(value, dict):
        value = "\n".join(f"{k}: {v}" for k, v in value.items())
    return f"<pre>{_e(value)}</pre>"


def _write(run_dir: Path, name: str, data: bytes) -> None:
    write_text_atomic(run_dir / PLOTS / name, data)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err.msg}", file=str(path), line=err.lineno) from err


# ----------------------------------------------------------------------------------------------- comparison report
def write_comparison_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    data = _read_json(run_dir / COMPARISON_FILE)
    for key in ("arms", "stats", "examples"):
        if key not in data:
            raise DataError(f"missing '{key}'", file=str(run_dir / COMPARISON_FILE), field=key)
    arms, stats, examples = data["arms"], data["stats"], data["examples"]
    for i, row in enumerate(examples):
        for key in ("index", "reward_a", "reward_b"):
            if not isinstance(row, dict) or key not in row:
                raise DataError(f"example {i} has no '{key}'", file=str(run_dir / COMPARISON_FILE), field=key)
    names = tuple(letter if arms.get(letter, {}).get("name") in (None, "", letter) else f"{letter} ({arms[letter]['name']})"
                  for letter in ("A", "B"))
    a = [row["reward_a"] for row in examples]
    b = [row["reward_b"] for row in examples]
    diff = np.asarray(b, float) - np.asarray(a, float)

    scatter = paired_scatter_png(a, b, names=names, seed=data.get("settings", {}).get("seed", 0))
    histogram = difference_histogram_png(diff, stats["mean_diff"], (stats["ci_low"], stats["ci_high"]), names=names)
    _write(run_dir, "paired_scatter.png", scatter)
    _write(run_dir, "difference_histogram.png", histogram)

    verdict_class = "verdict" if stats.get("significant") and not data.get("unscored") else "verdict none"
    parts = [f"<h1>A/B comparison: {_e(names[0])} vs {_e(names[1])}</h1>",
             f'<p class="{verdict_class}">{_e(data.get("verdict") or stats.get("verdict", ""))}</p>']
    parts.append("<h2>Arms</h2>" + _table(
        ["arm", "name", "what runs", "mean score"],
        [["A", arms.get("A", {}).get("name", "A"), arms.get("A", {}).get("description", ""), stats["mean_a"]],
         ["B", arms.get("B", {}).get("name", "B"), arms.get("B", {}).get("description", ""), stats["mean_b"]]]))
    settings = data.get("settings", {})
    if settings:
        parts.append('<p class="muted">' + _e(", ".join(f"{k}: {v}" for k, v in settings.items())) + "</p>")

    parts.append("<h2>Statistics</h2>" + _statistics_table(stats))
    parts.append('<div class="plots">' + _img(scatter, "per-example paired scatter")
                 + _img(histogram, "histogram of differences with the CI") + "</div>")
    if data.get("judge"):
        parts.append("<h2>Pairwise judge (both orders)</h2>" + _judge_table(data["judge"], names))
    if data.get("cost"):
        parts.append("<h2>Cost and reliability per arm</h2>" + _cost_table(data["cost"]))
    parts.append(f"<h2>The most different examples</h2>{_most_different(examples, names)}")
    html_text = _page(f"dspyrl comparison: {names[0]} vs {names[1]}", "\n".join(parts))
    path = run_dir / REPORT_FILE
    write_text_atomic(path, html_text)
    return path


def _statistics_table(s: dict) -> str:
    scale, unit = s.get("scale", 1.0), s.get("unit", "")
    rows = [
        ["examples (paired)", s["n"]],
        ["mean score A / B", f"{s['mean_a'] * scale:.4g} / {s['mean_b'] * scale:.4g} {unit}"],
        [f"mean difference B − A [{s['confidence']:.0%} paired bootstrap CI]",
         f"{s['mean_diff'] * scale:+.4g} [{s['ci_low'] * scale:.4g}, {s['ci_high'] * scale:.4g}] {unit}"],
        [f"primary test: {s['test']}", f"p = {s['p_value']:.4g}"],
    ]
    if s.get("mcnemar"):
        m = s["mcnemar"]
        rows.append(["McNemar (exact) discordant pairs", f"B only right: {m['b_only']}, A only right: {m['a_only']}, "
                                                         f"p = {m['p_value']:.4g}"])
    w, g = s.get("wilcoxon", {}), s.get("sign_test", {})
    if w:
        rows.append(["Wilcoxon signed-rank", f"W = {w['statistic']:.4g}, p = {w['p_value']:.4g}"])
    if g:
        rows.append(["sign test", f"B better {g['b_better']}, A better {g['a_better']}, ties {g['ties']}, "
                                  f"p = {g['p_value']:.4g}"])
    effect = s.get("effect_size", {})
    rows.append(["effect size", f"Cohen's d_z = {_fmt(effect.get('cohens_dz'))}, "
                                f"rank-biserial r = {_fmt(effect.get('rank_biserial'))}"])
    rows.append(["examples for 80% power at this difference",
                 f"{_fmt(s.get('n_for_power'))} ({s.get('power_method', '')})"])
    return _table(["statistic", "value"], rows)


def _judge_table(j: dict, names: tuple[str, str]) -> str:
    rows = [[f"{names[1]} wins", j["b_wins"]], [f"{names[0]} wins", j["a_wins"]], ["ties", j["ties"]],
            [f"win rate of {names[1]} (ties count half)", j["win_rate_b"]],
            ["judge inconsistency (verdict changed with the order)", j["inconsistency"]],
            ["judge failures (counted as ties)", j.get("failures", 0)],
            ["examples not judged (stopped at the cost cap)", j.get("unjudged", 0)],
            [f"mean output length {names[0]} / {names[1]} (characters)",
             f"{_fmt(j.get('mean_length_a'))} / {_fmt(j.get('mean_length_b'))}"]]
    check = j.get("check") or {}  # dspyrl.rewards.judge_check.pairwise_check: can this judge be trusted here?
    if check:
        rows += [["judge check: decisive verdicts for the output shown first (0.5 = no position bias)",
                  check.get("first_position_rate")],
                 ["judge check: both orders agree", check.get("consistency")],
                 ["judge check: share of ties", check.get("ties")]]
    return _table(["pairwise judge", "value"], rows) + (
        '<p class="muted">Judges favour longer answers; read the win rate beside the lengths.</p>')


def _cost_table(cost: dict) -> str:
    header = ["arm", "LM calls", "prompt tokens", "completion tokens", "cost (USD)", "latency p50 (s)",
              "latency p95 (s)", "error rate", "parse-failure rate", "wall time (s)"]
    rows = []
    for arm in ("A", "B"):
        c = cost.get(arm, {})
        rows.append([arm, c.get("lm_calls"), c.get("prompt_tokens"), c.get("completion_tokens"),
                     c.get("cost") if c.get("cost") is not None else "unknown", c.get("latency_p50_s"),
                     c.get("latency_p95_s"), c.get("error_rate"), c.get("parse_failure_rate"), c.get("wall_s")])
    return _table(header, rows) + ('<p class="muted">Answers served from DSPy&#x27;s cache count no tokens and almost '
                                   "no latency; compare with --no-cache for cost and latency figures.</p>")


def _most_different(examples: list[dict], names: tuple[str, str]) -> str:
    # score differences first; then equal scores from different outputs (a parse failure vs a wrong answer, say)
    def differs(row) -> bool:
        return (row.get("output_a"), row.get("raw_a")) != (row.get("output_b"), row.get("raw_b"))

    ranked = sorted(examples, key=lambda row: (-abs(row["reward_b"] - row["reward_a"]), not differs(row), row["index"]))
    shown = [row for row in ranked if row["reward_b"] != row["reward_a"] or differs(row)][:MOST_DIFFERENT]
    if not shown:
        return '<p class="muted">Both arms gave the same output on every example.</p>'
    blocks = []
    for row in shown:
        better_a = ' class="better"' if row["reward_a"] > row["reward_b"] else ""
        better_b = ' class="better"' if row["reward_b"] > row["reward_a"] else ""
        judge = f" · judge: {_e(row['judge'])}" if row.get("judge") else ""
        blocks.append(
            f'<div class="example"><div class="muted">example #{_e(row["index"])} · '
            f"score {_e(_fmt(row['reward_a']))} → {_e(_fmt(row['reward_b']))}{judge}</div>"
            f'<b>inputs</b><pre class="inputs">{_e(_plain(row.get("inputs", {})))}</pre>'
            f'<b>expected</b><pre class="inputs">{_e(_plain(row.get("labels", {})))}</pre>'
            f'<div class="pair"><div{better_a}><b>{_e(names[0])}</b>{_text_block(_output(row, "a"))}</div>'
            f"<div{better_b}><b>{_e(names[1])}</b>{_text_block(_output(row, 'b'))}</div></div></div>")
    return "\n".join(blocks)


def _plain(value) -> str:
    if isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _output(row: dict, arm: str):
    """The parsed output fields, or for a failed run the error and what the model actually wrote."""
    output = row.get(f"output_{arm}")
    if output:
        return output
    raw = row.get(f"raw_{arm}")
    return f"(failed) {row.get(f'error_{arm}')}" + (f"\n--- the model wrote ---\n{raw}" if raw else "")


# ----------------------------------------------------------------------------------------------- GRPO / eval run report
def read_jsonl(path: Path) -> list[dict]:
    from dspyrl.data import read_jsonl as rows_of

    return [row for _, row in rows_of(path, torn_last_line=True)]


def write_run_report(run_dir: str | Path) -> Path:
    """Report for an optimization run: reward curves from metrics.jsonl, every other metric, config, summary."""
    run_dir = Path(run_dir)
    rows = [flatten_metrics(row) for row in read_jsonl(run_dir / METRICS_FILE)]
    if not rows:
        raise DataError("no metric rows yet", file=str(run_dir / METRICS_FILE))
    numeric = list(dict.fromkeys(k for row in rows for k, v in row.items() if _is_number(v) and k != "step"))
    reward_keys = [k for k in numeric if any(w in k.lower() for w in ("reward", "score", "accuracy", "val"))
                   and not k.endswith("_std")]
    other_keys = [k for k in numeric if k not in reward_keys]

    parts = [f"<h1>dspyrl run: {_e(run_dir.name)}</h1>",
             f'<p class="muted">{len(rows)} metric rows from {_e(METRICS_FILE)}</p>']
    plots = []
    if reward_keys:
        png = metric_curves_png(rows, reward_keys, "reward over training")
        _write(run_dir, "reward_curve.png", png)
        plots.append(_img(png, "reward curve"))
    if other_keys:
        png = metric_grid_png(rows, other_keys)
        _write(run_dir, "metrics.png", png)
        plots.append(_img(png, "other metrics"))
    parts.append('<h2>Curves</h2><div class="plots">' + "".join(plots) + "</div>")
    last = rows[-1]
    parts.append("<h2>Last metrics</h2>" + _table(["metric", "value"], [[k, v] for k, v in last.items()
                                                                      if not isinstance(v, (dict, list))]))
    for name in ("summary.json", "config.json"):
        if (run_dir / name).is_file():
            parts.append(f"<h2>{_e(name)}</h2><pre class='inputs'>"
                         f"{_e(json.dumps(_read_json(run_dir / name), indent=2))}</pre>")
    html_text = _page(f"dspyrl run {run_dir.name}", "\n".join(parts))
    path = run_dir / REPORT_FILE
    write_text_atomic(path, html_text)
    return path


def metric_grid_png(rows: list[dict], keys: list[str], columns: int = 3) -> bytes:
    """One small plot per metric (losses, KL, tokens and seconds live on different scales)."""
    n_rows = math.ceil(len(keys) / columns)
    fig = _figure(3.3 * min(columns, len(keys)), 2.4 * n_rows)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(n_rows, min(columns, len(keys)), i + 1)
        points = [(row.get("step", j), row[key]) for j, row in enumerate(rows) if _is_number(row.get(key))]
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 40 else None, ms=2, lw=1)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------------------------- eval report
def reward_histogram_png(rewards: list[float]) -> bytes:
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    values = np.unique(rewards)
    if len(values) <= 11:
        counts = [sum(1 for r in rewards if r == v) for v in values]
        ax.bar(values, counts, width=0.8 * (np.min(np.diff(values)) if len(values) > 1 else 1.0), color=_COLOR_B,
               edgecolor="black")
    else:
        ax.hist(rewards, bins=min(30, max(10, len(rewards) // 5)), color=_COLOR_B, edgecolor="black")
    ax.axvline(float(np.mean(rewards)), color="black", lw=1.5, label=f"mean {np.mean(rewards):.3g}")
    ax.set_xlabel("reward per example")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    return _png(fig)


def write_eval_report(run_dir: str | Path) -> Path:
    """Report for `dspyrl eval`: the summary, the reward distribution, and the lowest-scoring examples."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / SUMMARY_FILE)
    rows = read_jsonl(run_dir / RESULTS_FILE)
    if not rows:
        raise DataError("no results", file=str(run_dir / RESULTS_FILE))
    rewards = [float((row.get("reward") or {}).get("total", 0.0)) for row in rows]
    histogram = reward_histogram_png(rewards)
    _write(run_dir, "reward_histogram.png", histogram)
    ci = summary.get("ci95")
    numbers = [["examples", summary.get("examples")],
               ["mean reward", f"{summary.get('mean_reward', float(np.mean(rewards))):.4g}"
                               + (f" [{ci[0]:.4g}, {ci[1]:.4g}] 95%" if ci else "")]]
    numbers += [[f"component: {k}", v] for k, v in (summary.get("components") or {}).items()]
    numbers += [[key.replace("_", " "), summary[key]] for key in
                ("failures", "failure_rate", "reward_failures", "lm_calls", "prompt_tokens", "completion_tokens",
                 "cost", "latency_median_s", "latency_p90_s", "wall_s") if key in summary]
    if summary.get("error_types"):
        numbers.append(["error types", ", ".join(f"{k}: {v}" for k, v in summary["error_types"].items())])
    title = f"dspyrl eval: {summary.get('program', run_dir.name)} on {summary.get('model', '?')}"
    parts = [f"<h1>{_e(title)}</h1>", "<h2>Summary</h2>" + _table(["measure", "value"], numbers),
             '<div class="plots">' + _img(histogram, "reward histogram") + "</div>",
             "<h2>Lowest-scoring examples</h2>"]
    order = sorted(range(len(rows)), key=lambda i: (rewards[i], i))[:MOST_DIFFERENT]
    for i in order:
        row = rows[i]
        outcome = row.get("prediction") if row.get("prediction") is not None else f"(failed) {row.get('error')}"
        parts.append(f'<div class="example"><div class="muted">example #{_e(row.get("example_index", i))} · '
                     f"reward {_e(_fmt(rewards[i]))}</div><b>inputs</b>"
                     f'<pre class="inputs">{_e(_plain(row.get("inputs", {})))}</pre><b>expected</b>'
                     f'<pre class="inputs">{_e(_plain(row.get("gold", {})))}</pre><b>output</b>{_text_block(outcome)}</div>')
    path = run_dir / REPORT_FILE
    write_text_atomic(path, _page(title, "\n".join(parts)))
    return path
