"""The HTML report: built from run-folder JSON alone, self-contained, escaped, and it renders in headless Chromium."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from dspyrl.errors import ConfigError, DataError
from dspyrl.compare.report import write_report
from dspyrl.compare.stats import paired_statistics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_comparison_folder(folder, n=30, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < 0.5).astype(float)
    b = np.where(rng.random(n) < 0.4, 1.0, a)
    stats = paired_statistics(a, b, names=("A (baseline)", "B (tuned)"))
    examples = [{
        "index": i, "inputs": {"review": f"review {i} <script>alert('x')</script> & more"},
        "labels": {"sentiment": "positive"},
        "output_a": {"sentiment": "negative" if a[i] == 0 else "positive"},
        "output_b": {"sentiment": "negative" if b[i] == 0 else "positive"},
        "reward_a": float(a[i]), "reward_b": float(b[i]), "error_a": None, "error_b": None,
        "judge": "B" if b[i] > a[i] else "tie",
    } for i in range(n)]
    data = {
        "kind": "comparison",
        "arms": {"A": {"name": "baseline", "description": "sentiment on tiny"},
                 "B": {"name": "tuned", "description": "sentiment + <b>better</b> instruction"}},
        "settings": {"seed": 0, "temperature": 0.0, "examples": n},
        "stats": stats.to_dict(), "verdict": stats.verdict,
        "judge": {"b_wins": 5, "a_wins": 1, "ties": n - 6, "win_rate_b": 0.57, "inconsistency": 0.2, "failures": 0,
                  "mean_length_a": 10.0, "mean_length_b": 12.5},
        "cost": {arm: {"lm_calls": n, "prompt_tokens": 1000, "completion_tokens": 200, "cost": None,
                       "latency_p50_s": 0.1, "latency_p95_s": 0.3, "error_rate": 0.0, "parse_failure_rate": 0.1,
                       "wall_s": 2.0} for arm in ("A", "B")},
        "examples": examples,
    }
    (folder / "comparison.json").write_text(json.dumps(data))
    return data


def embedded_pngs(text):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_comparison_report_is_self_contained_escaped_and_has_both_plots(tmp_path):
    data = make_comparison_folder(tmp_path)
    path = write_report(tmp_path)
    text = path.read_text()
    assert path.name == "report.html"
    assert data["verdict"] in text or data["verdict"].replace("−", "&#x2212;") in text
    pngs = embedded_pngs(text)
    assert len(pngs) == 2 and all(p.startswith(PNG_MAGIC) and len(p) > 5000 for p in pngs)
    assert (tmp_path / "plots" / "paired_scatter.png").read_bytes() == pngs[0]
    # user text is escaped, never live markup; nothing is fetched from elsewhere
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "&lt;b&gt;better&lt;/b&gt;" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    # the most different examples are the discordant ones, side by side
    discordant = sum(1 for e in data["examples"] if e["reward_a"] != e["reward_b"])
    assert text.count('class="example"') == min(discordant, 12) > 0
    assert "judge inconsistency" in text and "parse-failure rate" in text


def test_equal_scores_from_different_outputs_are_shown_with_what_the_model_wrote(tmp_path):
    data = make_comparison_folder(tmp_path, n=6)
    for row in data["examples"]:
        row["reward_b"], row["output_b"] = row["reward_a"], row["output_a"]
    failed = data["examples"][3]
    failed.update(reward_a=0.0, reward_b=0.0, output_a=None, error_a="AdapterParseError: no fields",
                  raw_a="```python\nprint('positive')```", output_b={"sentiment": "negative"})
    (tmp_path / "comparison.json").write_text(json.dumps(data))
    text = write_report(tmp_path).read_text()
    assert text.count('class="example"') == 1 and "example #3" in text
    assert "(failed) AdapterParseError: no fields" in text and "print(&#x27;positive&#x27;)" in text


def test_report_is_regenerated_from_json_alone(tmp_path):
    make_comparison_folder(tmp_path)
    first = write_report(tmp_path).read_text()
    (tmp_path / "report.html").unlink()
    shutil.rmtree(tmp_path / "plots")
    assert write_report(tmp_path).read_text() == first


def test_run_report_plots_reward_curve_from_metrics_jsonl(tmp_path):
    rows = [{"step": s, "reward_mean": 0.2 + 0.01 * s, "reward_std": 0.1, "kl": 0.001 * s, "entropy": 1.0 - 0.01 * s,
             "frac_zero_std": 0.5, "reward_components": {"judge": 0.1 * s}, "note": "x",
             "val_score": 0.3 + 0.005 * s if s % 5 == 0 else None} for s in range(20)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1, "program": "<sentiment>"}))
    text = write_report(tmp_path).read_text()
    assert (tmp_path / "plots" / "reward_curve.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "plots" / "metrics.png").read_bytes().startswith(PNG_MAGIC)
    assert len(embedded_pngs(text)) == 2  # rewards (incl. the nested component and val), then one grid of the rest
    assert "&lt;sentiment&gt;" in text and "reward_components/judge" in text


def test_eval_report_from_a_real_eval_run_folder(tmp_path):
    from dspy.utils import DummyLM

    from dspyrl.cli.eval import EvalConfig, evaluate

    # the eval folder is written by dspyrl eval itself; a canned LM that always says "positive" makes half the
    # balanced sentiment set right, so the lowest-scoring examples are the negative reviews
    always_positive = DummyLM({"review": {"sentiment": "positive"}})
    evaluate(EvalConfig(program="sentiment", out=str(tmp_path), limit=10, threads=2), lm=always_positive)
    text = write_report(tmp_path).read_text()
    assert (tmp_path / "plots" / "reward_histogram.png").read_bytes().startswith(PNG_MAGIC)
    assert "dspyrl eval: sentiment" in text and len(embedded_pngs(text)) == 1
    shown = re.findall(r"example #\d+ · reward ([0-9.]+)", text)
    assert len(shown) == 10 and shown[:5] == ["0"] * 5 and shown[5:] == ["1"] * 5


def test_bad_run_folders_give_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        write_report(tmp_path / "missing")
    with pytest.raises(ConfigError, match="has none of comparison.json, metrics.jsonl or results.jsonl"):
        write_report(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: invalid JSON") as info:
        write_report(tmp_path)
    assert "\n" not in str(info.value)
    broken = tmp_path / "cmp"
    broken.mkdir()
    (broken / "comparison.json").write_text(json.dumps({"arms": {}, "stats": {}}))
    with pytest.raises(DataError, match="field 'examples'"):
        write_report(broken)
    (broken / "comparison.json").write_text(json.dumps({"arms": {}, "stats": {}, "examples": [{"index": 0}]}))
    with pytest.raises(DataError, match="field 'reward_a': example 0 has no 'reward_a'"):
        write_report(broken)


# ----------------------------------------------------------------------------------------------- headless Chromium
def chromium_binary():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render_in_chromium(html_path, out_dir, *, screenshot=None, height=2400):
    """Load the page in headless Chromium; return (dump of the DOM after load, stderr). Optionally screenshot it."""
    binary = chromium_binary()
    flags = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={out_dir / 'chromium-profile'}", f"--window-size=1280,{height}",
             "--virtual-time-budget=5000"]
    if screenshot:
        subprocess.run(flags + [f"--screenshot={screenshot}", html_path.as_uri()], check=True, capture_output=True,
                       timeout=120)
    done = subprocess.run(flags + ["--enable-logging=stderr", "--v=0", "--dump-dom", html_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def check_page_in_chromium(report_path, out_dir, screenshot=None):
    """The report itself has no scripts; a probe copy adds one that records whether every image decoded and
    whether any error event fired, so a broken data URI or bad markup fails the test."""
    probe = out_dir / "probe.html"
    text = report_path.read_text()
    probe_script = (
        "<script>window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message||e.type)),true);"
        "window.addEventListener('load',()=>{const imgs=[...document.images];"
        "const bad=imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length;"
        "document.body.setAttribute('data-probe',`images=${imgs.length};broken=${bad};errors=${window.__errors.length}`);});"
        "</script>")
    probe.write_text(text.replace("<head>", "<head>" + probe_script, 1))
    dom, stderr = render_in_chromium(probe, out_dir)
    match = re.search(r'data-probe="images=(\d+);broken=(\d+);errors=(\d+)"', dom)
    assert match, dom[:500]
    images, broken, errors = map(int, match.groups())
    assert images >= 2 and broken == 0 and errors == 0, match.group(0)
    assert "Uncaught" not in stderr
    if screenshot:
        render_in_chromium(report_path, out_dir, screenshot=screenshot)
        assert screenshot.read_bytes().startswith(PNG_MAGIC)
    return images


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_comparison_report_renders_in_headless_chromium(tmp_path):
    make_comparison_folder(tmp_path)
    report = write_report(tmp_path)
    assert check_page_in_chromium(report, tmp_path, screenshot=tmp_path / "shot.png") == 2
