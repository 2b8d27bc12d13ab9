import pytest

from gateway.protocol.errors import GatewayError
from gateway.routing.overrides import NO_PREFS, provider_prefs, requested_models


def test_models_array_follows_model_without_repeats():
    assert requested_models({"models": ["a/x", "b/y", "a/x"]}, "a/x") == ("a/x", "b/y")
    assert requested_models({"models": ["b/y"]}, "auto") == ("auto", "b/y")
    assert requested_models({}, "auto") == ("auto",)


@pytest.mark.parametrize("models", ["a/x", [1], [""], {"a": 1}])
def test_bad_models_array_is_400(models):
    with pytest.raises(GatewayError) as e:
        requested_models({"models": models}, "auto")
    assert e.value.status == 400 and e.value.param == "models"


def test_provider_object_is_read_like_openrouter():
    prefs = provider_prefs(
        {
            "provider": {
                "order": ["Groq", "together"],
                "only": ["groq", "together"],
                "ignore": ["deepseek"],
                "allow_fallbacks": False,
                "sort": {"by": "latency"},
                "max_price": {"prompt": "1.5", "completion": 2},
                "data_collection": "deny",
                "quantizations": ["fp8"],
            }
        }
    )
    assert prefs.order == ("groq", "together") and prefs.only == ("groq", "together") and prefs.ignore == ("deepseek",)
    assert prefs.allow_fallbacks is False and prefs.sort == "latency"
    assert prefs.max_prompt_price == 1.5 and prefs.max_completion_price == 2.0


def test_no_provider_object_means_no_preferences():
    assert provider_prefs({}) is NO_PREFS and NO_PREFS.empty
    assert not provider_prefs({"provider": {"sort": "price"}}).empty


@pytest.mark.parametrize(
    "provider, param",
    [
        ("groq", "provider"),
        ({"order": "groq"}, "provider.order"),
        ({"only": [1]}, "provider.only"),
        ({"ignore": {}}, "provider.ignore"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"max_price": 3}, "provider.max_price"),
        ({"max_price": {"prompt": -1}}, "provider.max_price.prompt"),
        ({"max_price": {"completion": "lots"}}, "provider.max_price.completion"),
        ({"max_price": {"prompt": True}}, "provider.max_price.prompt"),
    ],
)
def test_bad_provider_fields_are_400_naming_the_field(provider, param):
    with pytest.raises(GatewayError) as e:
        provider_prefs({"provider": provider})
    assert e.value.status == 400 and e.value.param == param
