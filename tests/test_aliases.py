"""The alias contract (steps.registry.aliases) against the real MLflow registry."""

from __future__ import annotations

import pytest

from steps.base.errors import BadInput, ConcurrentChange
from steps.registry import aliases

from .conftest import unique


@pytest.mark.parametrize(
    ("text", "model", "alias"),
    [
        ("resnet@live", "resnet", "live"),
        ("my-model@candidate_2", "my-model", "candidate_2"),
        ("team@model@staged", "team@model", "staged"),  # the last '@' separates the alias
    ],
)
def test_parse_ref_splits_model_and_alias(text, model, alias):
    ref = aliases.parse_ref(text)
    assert (ref.model, ref.alias) == (model, alias)
    assert str(ref) == f"{model}@{alias}"


@pytest.mark.parametrize(
    "text", ["", "resnet", "@live", "resnet@", "resnet@v3", "resnet@latest", "resnet@bad alias"]
)
def test_parse_ref_rejects_malformed_refs(text):
    with pytest.raises(BadInput):
        aliases.parse_ref(text)


@pytest.mark.parametrize("alias", ["live", "previous", "cand-1", "_x", "A_b-9"])
def test_check_alias_name_accepts_valid_names(alias):
    assert aliases.check_alias_name(alias) == alias


@pytest.mark.parametrize(
    "alias",
    ["latest", "Latest", "v3", "V12", "", "1st", "-x", "has space", "a@b", "a.b", "x" * 256],
)
def test_check_alias_name_rejects_reserved_and_bad_names(alias):
    with pytest.raises(BadInput) as info:
        aliases.check_alias_name(alias)
    assert info.value.exit_code == 2


def test_resolve_returns_the_version_an_alias_names(models, client):
    name = models.create(2)
    models.set_alias(name, "staged", "2")
    models.set_alias(name, "live", "1")
    assert aliases.resolve(client, name, "staged") == "2"
    assert aliases.resolve(client, name, "live") == "1"


def test_resolve_unknown_model_lists_registered_models(models, client):
    # a name that sorts first, so it is within the listed ones however many models exist
    known = models.create(1, prefix="AAAA-alias")
    with pytest.raises(BadInput) as info:
        aliases.resolve(client, known + "-nope", "live")
    message = str(info.value)
    assert f"registered model '{known}-nope' does not exist" in message
    assert "registered models:" in message
    assert known in message


def test_resolve_unknown_alias_lists_existing_aliases(models, client):
    name = models.create(2)
    models.set_alias(name, "candidate", "1")
    models.set_alias(name, "staged", "2")
    with pytest.raises(BadInput) as info:
        aliases.resolve(client, name, "live")
    message = str(info.value)
    assert "has no alias 'live'" in message
    assert "candidate=v1" in message and "staged=v2" in message


def test_resolve_alias_on_model_without_aliases_says_none(models, client):
    name = models.create(1)
    with pytest.raises(BadInput, match=r"its aliases: none"):
        aliases.resolve(client, name, "live")


def test_set_alias_sets_and_moves_it(models, client):
    name = models.create(2)
    aliases.set_alias(client, name, "staged", 1)
    assert models.aliases(name) == {"staged": "1"}
    aliases.set_alias(client, name, "staged", "2")
    assert models.aliases(name) == {"staged": "2"}


def test_set_alias_to_missing_version_is_bad_input_and_changes_nothing(models, client):
    name = models.create(1)
    models.set_alias(name, "staged", "1")
    with pytest.raises(BadInput, match="has no version 7"):
        aliases.set_alias(client, name, "staged", "7")
    assert models.aliases(name) == {"staged": "1"}


def test_set_alias_on_missing_model_is_bad_input(client, stack_env):
    missing = unique("no-model")
    with pytest.raises(BadInput, match=missing):
        aliases.set_alias(client, missing, "staged", "1")


def test_set_alias_with_reserved_name_is_refused(models, client):
    name = models.create(1)
    with pytest.raises(BadInput, match="reserved"):
        aliases.set_alias(client, name, "v1", "1")
    assert models.aliases(name) == {}


def test_set_alias_compare_and_set_refuses_on_mismatch(models, client):
    # given live at v1
    name = models.create(3)
    models.set_alias(name, "live", "1")
    # when a writer believes live is at v2
    with pytest.raises(ConcurrentChange) as info:
        aliases.set_alias(client, name, "live", "3", expect_current="2")
    # then it is refused and live is left alone
    assert "live is v1, expected v2" in str(info.value)
    assert info.value.exit_code == 1
    assert models.aliases(name) == {"live": "1"}
    # and with the right expectation it goes through
    aliases.set_alias(client, name, "live", "3", expect_current=1)
    assert models.aliases(name) == {"live": "3"}


def test_set_alias_expect_none_means_expect_unset(models, client):
    name = models.create(2)
    aliases.set_alias(client, name, "live", "1", expect_current=None)
    assert models.aliases(name) == {"live": "1"}
    with pytest.raises(ConcurrentChange, match="live is v1, expected unset"):
        aliases.set_alias(client, name, "live", "2", expect_current=None)
    assert models.aliases(name) == {"live": "1"}


def test_delete_alias_removes_it(models, client):
    name = models.create(1)
    models.set_alias(name, "staged", "1")
    models.set_alias(name, "live", "1")
    aliases.delete_alias(client, name, "staged")
    assert models.aliases(name) == {"live": "1"}


def test_delete_alias_is_a_noop_when_unset(models, client):
    name = models.create(1)
    models.set_alias(name, "live", "1")
    aliases.delete_alias(client, name, "previous")
    aliases.delete_alias(client, name, "previous", expect_current=None)
    assert models.aliases(name) == {"live": "1"}


def test_delete_alias_compare_and_set_refuses_on_mismatch(models, client):
    name = models.create(2)
    models.set_alias(name, "previous", "1")
    with pytest.raises(ConcurrentChange, match="previous is v1, expected v2"):
        aliases.delete_alias(client, name, "previous", expect_current="2")
    with pytest.raises(ConcurrentChange, match="expected unset"):
        aliases.delete_alias(client, name, "previous", expect_current=None)
    assert models.aliases(name) == {"previous": "1"}
    aliases.delete_alias(client, name, "previous", expect_current="1")
    assert models.aliases(name) == {}


def test_delete_alias_expecting_a_version_of_an_unset_alias_is_refused(models, client):
    name = models.create(1)
    with pytest.raises(ConcurrentChange, match="previous is unset, expected v1"):
        aliases.delete_alias(client, name, "previous", expect_current="1")
