"""The one cost decision (dspyrl.lm.usage.call_cost) that the meter and the rollouts' entry_cost share."""

import pytest

from dspyrl.lm.usage import call_cost, entry_cost, price_of


class _LM:
    model = "acme/unpriced-model-for-this-test"


def test_the_providers_figure_beats_dspys_and_dspys_beats_none():
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    assert call_cost(_LM.model, {**usage, "cost": 0.003}, dspy_cost=0.001) == (0.003, "provider")
    assert call_cost(_LM.model, usage, dspy_cost=0.001) == (0.001, "price map")
    assert call_cost(_LM.model, usage) == (0.0, "tokens only")  # an unknown price is not a zero price: the source says so
    # the bill read off the response body (OpenRouter's usage.cost) counts as the provider's, above DSPy's estimate
    assert call_cost(_LM.model, usage, dspy_cost=0.001, reported_cost=0.002) == (0.002, "provider")
    assert call_cost(_LM.model, {**usage, "cost": 0.003}, reported_cost=0.002) == (0.003, "provider")


def test_a_history_entry_is_priced_as_the_meter_prices_its_call():
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    # the provider billed 0.003 (in the usage it returned) while DSPy estimated 0.001: the bill wins in both places
    entry = {"usage": {**usage, "cost": 0.003}, "cost": 0.001}
    assert entry_cost(_LM(), entry) == call_cost(_LM.model, entry["usage"], entry["cost"])[0] == 0.003
    assert entry_cost(_LM(), {"usage": usage, "cost": 0.001}) == 0.001
    assert entry_cost(_LM(), {"usage": {}, "cost": 0.001}) == 0.0  # a cache hit: nothing was billed

    class _Response:  # a typed call's reply: the bill is in provider_data, DSPy's usage carries only tokens
        message = None
        provider_data = {"usage": {"cost": 0.004}}

    assert entry_cost(_LM(), {"usage": usage, "cost": 0.001, "response": _Response()}) == 0.004


def test_a_model_priced_after_a_miss_gets_its_price(monkeypatch):
    """The miss memo once kept a model unpriced for the whole process, even after litellm.register_model priced it."""
    import litellm

    monkeypatch.setattr(litellm, "model_cost", dict(litellm.model_cost))  # the registration below stays in this test
    model = "acme/priced-later-for-this-test"
    assert price_of(model, 1000, 1000) is None and price_of(model, 1000, 1000) is None  # asked once, remembered
    litellm.register_model({model: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                    "litellm_provider": "openai", "mode": "chat"}})
    assert price_of(model, 1000, 1000) == pytest.approx(0.003)
