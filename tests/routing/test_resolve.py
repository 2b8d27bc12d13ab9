import pytest

from gateway.protocol.errors import GatewayError
from gateway.routing.resolve import resolve
from tests.routing.support import POLICY, snapshot_from

SNAP = snapshot_from(POLICY)


def test_route_name_resolves_to_the_route():
    target = resolve("auto", SNAP)
    assert target.route_name == "auto" and target.route is SNAP.routes["auto"] and target.model is None


def test_canonical_id_resolves_to_the_model():
    target = resolve("big/long", SNAP)
    assert target.model == "big/long" and target.route is None and target.sort is None


@pytest.mark.parametrize(
    "name, sort", [("big/long:floor", "price"), ("big/long:nitro", "throughput"), ("auto:floor", "price")]
)
def test_variant_suffixes_set_the_provider_sort(name, sort):
    target = resolve(name, SNAP)
    assert target.sort == sort
    assert (target.model or target.route_name) == name.rsplit(":", 1)[0]


@pytest.mark.parametrize("name", ["nobody/nothing", "big/long:free", "auto:", "Auto", "big/long:floor:nitro"])
def test_unknown_names_are_404_model_not_found(name):
    with pytest.raises(GatewayError) as e:
        resolve(name, SNAP)
    assert e.value.status == 404 and e.value.code == "model_not_found" and e.value.param == "model"


def test_a_model_whose_id_contains_a_colon_resolves_exactly_first():
    snap = snapshot_from(
        """
        backends:
          b: {type: openai, base_url: "http://x/v1", models: {"openai/gpt-oss-120b:free": {}, "openai/gpt-oss-120b": {}}}
        """
    )
    assert resolve("openai/gpt-oss-120b:free", snap).model == "openai/gpt-oss-120b:free"
    assert resolve("openai/gpt-oss-120b:floor", snap).model == "openai/gpt-oss-120b"
