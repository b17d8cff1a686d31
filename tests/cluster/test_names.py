"""Names and tags callers choose are checked before they reach keys, paths or actor names."""

from __future__ import annotations

import pytest

from cluster import ClusterSettings, check_memory_name, check_tenant, check_user_tag, qualify
from errors import InvalidInput


@pytest.mark.parametrize("name", ["../x", "x/../y", "a/b", "", "x" * 300, "Notes", "UPPER", "-lead", ".hidden",
                                  "sp ace", "tab\t", "ünï", None, 7])
def test_bad_memory_names_are_invalid_input(name):
    with pytest.raises(InvalidInput, match="memory name"):
        check_memory_name(name)


@pytest.mark.parametrize("name", ["base", "alice.base", "bob_base-2", "a", "0", "x" * 63])
def test_good_memory_names_pass(name):
    assert check_memory_name(name) == name


def test_long_names_are_cut_in_the_message():
    with pytest.raises(InvalidInput) as info:
        check_memory_name("y" * 300)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("tenant", ["", "../t", "a/b", "t" * 200, "*", None])
def test_bad_tenants(tenant):
    with pytest.raises(InvalidInput, match="tenant"):
        check_tenant(tenant)


@pytest.mark.parametrize("tag", ["", "auto@000001", "../v1", "v 1", "x" * 65, "-v1", "a/b"])
def test_bad_tags_including_the_reserved_auto_form(tag):
    with pytest.raises(InvalidInput, match="checkpoint tag"):
        check_user_tag(tag)


@pytest.mark.parametrize("tag", ["v1.0", "pre-experiment", "V2_final", "x" * 64])
def test_good_tags(tag):
    assert check_user_tag(tag) == tag


def test_qualify_joins_checked_parts():
    assert qualify("acme", "notes") == "acme/notes"
    with pytest.raises(InvalidInput):
        qualify("acme", "Notes")


def test_settings_validate_namespace_and_bounds():
    with pytest.raises(ValueError, match="NMEM_NAMESPACE"):
        ClusterSettings(namespace="bad namespace!")
    with pytest.raises(ValueError):
        ClusterSettings(max_live_actors=0)
    settings = ClusterSettings(namespace="nm-1", max_live_actors=4)
    assert settings.max_live_actors == 4 and settings.storage.redis_prefix
