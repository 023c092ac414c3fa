"""The cost cap, end to end: prompt GRPO on an OpenRouter-speaking server stops cleanly before the step that would
cross its cap, checkpointed, and `resume` with a higher cap continues from there with the spend carried over."""

import pytest

from dspyrl.lm import lm_from_spec
from dspyrl.lm.usage import assign_role
from dspyrl.optim.prompts.grpo import GRPO
from dspyrl.program_file import load_program_file
from tests.lm.openrouter_server import OpenRouterServer

KEY = "sk-or-canary-cap-0123456789"


def test_the_cap_stops_grpo_within_a_step_and_resume_continues(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    spec = load_program_file("sentiment")
    rows = spec.load_examples()
    train, val = rows[:8], rows[40:44]
    with OpenRouterServer(key=KEY, answers={ex.review: ex.sentiment for ex in rows}) as server:
        task = lm_from_spec("openrouter/acme/task-small", api_base=server.base_url, max_tokens=64, temperature=1.0)
        reflection = assign_role(lm_from_spec("openrouter/acme/reflect-large", api_base=server.base_url,
                                              max_tokens=64, temperature=1.0), "reflection")
        settings = dict(max_metric_calls=200, group_size=2, batch_size=2, propose_every=1, eval_every=0,
                        learn_format=False, num_threads=2, progress=False)

        def grpo(cap, resume):
            return GRPO(spec.build_reward(), lm=task, reflection_lm=reflection, run_dir=tmp_path / "run",
                        resume=resume, max_cost=cap, **settings)

        first = grpo(0.004, False)
        first.compile(spec.build_program(), trainset=train, valset=val)
        billed_first = server.billed
        second = grpo(0.008, True)
        second.compile(spec.build_program(), trainset=train, valset=val)

    state, table = first.state, first.meter.table()
    assert state.stopped == "cost_cap" and state.step >= 1
    steps = [state.step]
    per_step = table["total"]["cost"] / max(1, state.step)
    print(f"capped run: cap $0.004000, spent ${first.meter.cost:.6f} (server billed ${billed_first:.6f}) in "
          f"{state.step} steps; by role { {r: round(v['cost'], 6) for r, v in table.items()} }")
    assert first.meter.cost == pytest.approx(billed_first, rel=1e-9)
    assert first.meter.cost < 0.004 + per_step  # within one step of the cap
    assert table["reflection"]["calls"] >= 1 and table["task"]["calls"] >= 1
    assert {"task", "reflection"} <= set(state.usage)
    # resumed with a higher cap: the spend so far is carried over, and the run goes on to the new cap
    resumed = second.state
    steps.append(resumed.step)
    assert resumed.step > steps[0] and resumed.stopped in ("cost_cap", "budget")
    assert second.meter.cost == pytest.approx(server.billed, rel=1e-9)
    assert second.meter.cost > 0.004 and second.meter.cost < 0.008 + per_step
    print(f"resumed: cap $0.008000, spent ${second.meter.cost:.6f} total, steps {steps}, stopped {resumed.stopped}")
