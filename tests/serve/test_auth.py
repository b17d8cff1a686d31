"""API keys -> tenants, and the rule that auth may be off only on loopback (no Ray needed)."""

from __future__ import annotations

import pytest

from errors import AuthError, Forbidden, InvalidInput
from serve.auth import DEFAULT_TENANT, Authenticator, parse_pairs
from serve.settings import GatewaySettings, is_loopback


def test_pairs_parse_from_env_style_text():
    pairs = parse_pairs(" key-one-123:acme , key-two-456:globex ", "NMEM_API_KEYS")
    assert pairs == {"key-one-123": "acme", "key-two-456": "globex"}


def test_keys_may_contain_colons_the_tenant_is_after_the_last():
    assert parse_pairs("abc:def:ghi:acme", "NMEM_API_KEYS") == {"abc:def:ghi": "acme"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("no-colon-here", "key:tenant"),
        (":acme", "key:tenant"),
        ("key-one-123:", "key:tenant"),
        ("short:acme", "at least 8"),
        ("dave-ключ-0004:dave", "printable ASCII"),  # a header could never carry it: locked out
        ("key-with\x07bell:acme", "printable ASCII"),
        ("key-one-123:Bad/Tenant", "tenant"),
        ("key-one-123:acme,key-one-123:globex", "two tenants"),
    ],
)
def test_bad_pairs_say_what_to_fix(text, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        parse_pairs(text, "NMEM_API_KEYS")


def test_keys_file_allows_comments_and_merges_with_env(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("# team keys\nfile-key-0001:acme  # ops\n\nfile-key-0002:globex\n")
    auth = Authenticator.from_settings(
        GatewaySettings(api_keys="env-key-0001:acme", api_keys_file=path)
    )
    assert auth.enabled and auth.tenants == {"acme", "globex"}
    assert auth.tenant_for("Bearer file-key-0002") == "globex"
    assert auth.tenant_for("Bearer env-key-0001") == "acme"


def test_unreadable_keys_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="NMEM_API_KEYS_FILE"):
        Authenticator.from_settings(GatewaySettings(api_keys_file=tmp_path / "missing"))


@pytest.mark.parametrize(
    "header, fragment",
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer wrong-key-000", "unknown API key"),
    ],
)
def test_requests_without_a_valid_key_are_refused(header, fragment):
    auth = Authenticator.from_keys({"right-key-000": "acme"})
    with pytest.raises(AuthError, match=fragment):
        auth.tenant_for(header)


def test_bearer_scheme_is_case_insensitive():
    auth = Authenticator.from_keys({"right-key-000": "acme"})
    assert auth.tenant_for("bearer right-key-000") == "acme"


def test_only_digests_are_kept():
    auth = Authenticator.from_keys({"right-key-000": "acme"})
    assert "right-key-000" not in repr(auth)
    assert "right-key-000" not in str(auth.digests())
    assert Authenticator(auth.digests()).tenant_for("Bearer right-key-000") == "acme"


def test_auth_off_is_the_default_tenant_on_loopback_only():
    auth = Authenticator.from_keys({})
    assert not auth.enabled
    assert auth.tenant_for(None) == DEFAULT_TENANT
    auth.check_bind("127.0.0.1")
    auth.check_bind("localhost")
    auth.check_bind("::1")
    with pytest.raises(InvalidInput, match="NMEM_API_KEYS"):
        auth.check_bind("0.0.0.0")
    with pytest.raises(InvalidInput, match="NMEM_API_KEYS"):
        auth.check_bind("10.1.2.3")


def test_auth_off_serves_only_loopback_clients():
    auth = Authenticator.from_keys({})
    auth.check_client("127.0.0.1")
    with pytest.raises(Forbidden):
        auth.check_client("192.168.1.20")
    Authenticator.from_keys({"right-key-000": "acme"}).check_client("192.168.1.20")


@pytest.mark.parametrize(
    "host, expected",
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("example.com", False), ("10.0.0.1", False)],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected
