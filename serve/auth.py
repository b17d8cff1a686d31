"""API keys -> tenants.

Keys come from NMEM_API_KEYS ("key:tenant" pairs, comma-separated) and/or the file named by
NMEM_API_KEYS_FILE (one pair per line, `#` comments). Only sha256 digests of the keys are
kept, so a heap dump or a log of this object never shows a key. With no keys at all, auth is
off and every caller is the tenant "default" — allowed only when the server listens on
loopback (`check_bind`), and then only loopback clients are served (`check_client`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import contract
from errors import AuthError, Forbidden, InvalidInput
from serve.settings import GatewaySettings, is_loopback

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
MIN_KEY_CHARS = 8


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (the scheme in any case, spaces around
    the key), else None."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    return (key.strip() or None) if scheme.lower() == "bearer" else None


def parse_pairs(text: str, source: str, *, is_file: bool = False) -> dict[str, str]:
    """Parse "key:tenant" pairs separated by commas or newlines into {key: tenant}."""
    pairs: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if is_file:  # files may carry comments; an env var is taken literally
            line = line.split("#", 1)[0]
        where = f"{source} line {lineno}" if is_file else source
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, tenant = item.rpartition(":")
            if not sep or not key.strip() or not tenant.strip():
                raise InvalidInput(f'{where}: expected "key:tenant", got an entry without both parts')
            key, tenant = key.strip(), tenant.strip()
            # Printable ASCII: a header is read as latin-1, so any other key could never match.
            if len(key) < MIN_KEY_CHARS or not (key.isascii() and key.isprintable()) or " " in key:
                raise InvalidInput(f"{where}: API keys need at least {MIN_KEY_CHARS} characters, all printable "
                                   "ASCII (letters, digits, punctuation; no spaces)")
            try:
                contract.check_tenant(tenant)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}: {exc}") from None
            if key in pairs and pairs[key] != tenant:
                raise InvalidInput(f"{where}: the same API key is given to two tenants")
            pairs[key] = tenant
    return pairs


@dataclass(frozen=True)
class Authenticator:
    """Resolves an `Authorization` header to a tenant, or refuses."""

    _tenants_by_digest: dict[str, str] = field(default_factory=dict, repr=False)
    metrics_digest: str | None = field(default=None, repr=False)  # sha256 of NMEM_METRICS_KEY

    @classmethod
    def from_keys(cls, pairs: dict[str, str], metrics_key: str | None = None) -> Authenticator:
        return cls({_digest(key): tenant for key, tenant in pairs.items()},
                   _digest(metrics_key) if metrics_key else None)

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Authenticator:
        pairs: dict[str, str] = {}
        if settings.api_keys:
            pairs.update(parse_pairs(settings.api_keys, "NMEM_API_KEYS"))
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidInput(f"NMEM_API_KEYS_FILE: cannot read {path}: {exc}") from exc
            for key, tenant in parse_pairs(text, str(path), is_file=True).items():
                if pairs.get(key, tenant) != tenant:
                    raise InvalidInput(f"{path}: an API key is given to two tenants")
                pairs[key] = tenant
        if settings.metrics_key and settings.metrics_key in pairs:
            raise InvalidInput("NMEM_METRICS_KEY must differ from every tenant's API key")
        return cls.from_keys(pairs, settings.metrics_key)

    def digests(self) -> dict[str, str]:
        """{sha256(key): tenant}: what replicas receive instead of the keys themselves."""
        return dict(self._tenants_by_digest)

    @property
    def enabled(self) -> bool:
        return bool(self._tenants_by_digest)

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants_by_digest.values())

    def check_bind(self, host: str, *, warn: bool = True) -> None:
        """Refuse to serve without keys on a non-loopback address; warn when auth is off."""
        if self.enabled:
            return
        if not is_loopback(host):
            raise InvalidInput(
                f"auth is off but the server would listen on {host!r}: set NMEM_API_KEYS "
                '("key:tenant,...") or NMEM_API_KEYS_FILE, or bind to 127.0.0.1'
            )
        if warn:
            logger.warning(
                "AUTH IS OFF: no API keys configured (NMEM_API_KEYS / NMEM_API_KEYS_FILE); every "
                "loopback caller acts as tenant %r", DEFAULT_TENANT,
            )

    def tenant_for(self, authorization: str | None) -> str:
        """The tenant of a `Bearer <key>` header; AuthError if missing or unknown."""
        if not self.enabled:
            return DEFAULT_TENANT
        if not authorization:
            raise AuthError("missing API key: send the header 'Authorization: Bearer <key>'")
        key = bearer_key(authorization)
        if key is None:
            raise AuthError("malformed Authorization header: use 'Authorization: Bearer <key>'")
        tenant = self._tenants_by_digest.get(_digest(key))
        if tenant is None:
            raise AuthError("unknown API key")
        return tenant

    def key_id(self, authorization: str | None) -> str:
        """Which key made a call, for audit records: a fingerprint (the first 12 hex digits of
        the key's sha256), never the key; "auth-off" without keys."""
        if not self.enabled:
            return "auth-off"
        return "key:" + _digest(bearer_key(authorization) or "")[:12]

    def caller_of(self, authorization: str | None) -> str:
        """Whose share of the gateway a request uses (serve.limits): its API key, however the
        header spells it. Requests without a known key all share one ("anonymous"): by their
        address, a caller could pick a share of its own (X-Forwarded-For is believed from a
        proxy on this machine), and guesses at keys would go unthrottled; with auth off every
        caller is on this machine and the one tenant anyway."""
        key = bearer_key(authorization) if self.enabled else None
        digest = _digest(key) if key is not None else None
        if digest is not None and digest in self._tenants_by_digest:
            return f"key:{digest}"
        return "anonymous"

    def check_metrics(self, authorization: str | None, client_host: str | None, public: bool) -> None:
        """May this caller read /metrics (server-wide figures, so never with a tenant's key)?"""
        if public:
            return
        if self.metrics_digest is not None:
            key = bearer_key(authorization)
            if key is not None and _digest(key) == self.metrics_digest:
                return
            if key is not None and _digest(key) in self._tenants_by_digest:  # known, but not allowed here
                raise Forbidden("/metrics shows server-wide figures, so tenant keys cannot read it: scrape "
                                "it with the operator key (NMEM_METRICS_KEY)")
            raise AuthError("/metrics needs the operator key: 'Authorization: Bearer <NMEM_METRICS_KEY>'")
        if not self.enabled:
            self.check_client(client_host)
            return
        raise Forbidden("/metrics shows server-wide figures, so tenant keys cannot read it: set "
                        "NMEM_METRICS_KEY and scrape with it (or NMEM_METRICS_PUBLIC=true)")

    def check_client(self, client_host: str | None) -> None:
        """With auth off, only this machine may call (defence if the proxy binds wider)."""
        if self.enabled or client_host is None or is_loopback(client_host):
            return
        raise Forbidden("auth is off on this server, so only loopback clients are served")
