"""Names callers choose: tenants, memory names and checkpoint tags, checked before use.

They end up in Redis keys, object keys, file paths and Ray actor names, so only a small,
safe alphabet passes: no '/', no '..' tricks, bounded length, lowercase memory names.
"""

from __future__ import annotations

import re

from errors import InvalidInput

__all__ = ["check_tenant", "check_memory_name", "check_user_tag", "qualify", "split"]

_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# '@' is left out on purpose: internal auto-checkpoint tags use it, so users cannot clash.
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise InvalidInput(
            f"tenant {_show(tenant)} must be 1-128 letters, digits or ._@+- (starting alphanumeric)"
        )
    return tenant


def check_memory_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"memory name {_show(name)} is invalid: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (pattern [a-z0-9][a-z0-9._-]{0,62})"
        )
    return name


def check_user_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise InvalidInput(
            f"checkpoint tag {_show(tag)} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'v1.0', 'pre-experiment')"
        )
    return tag


def qualify(tenant: str, name: str) -> str:
    """The fully qualified id "tenant/name" after checking both parts."""
    return f"{check_tenant(tenant)}/{check_memory_name(name)}"


def split(qname: str) -> tuple[str, str]:
    tenant, _, name = qname.partition("/")
    return tenant, name
