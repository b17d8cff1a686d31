"""Names callers choose: tenants, memory names and checkpoint tags, checked before use.

The rules themselves live in `contract` (one home for every input rule); this module only
qualifies a short memory name with its tenant ("tenant/name") and splits it again.
"""

from __future__ import annotations

from contract import check_memory_name, check_tenant
from contract import check_tag as check_user_tag

__all__ = ["check_tenant", "check_memory_name", "check_user_tag", "qualify", "split"]


def qualify(tenant: str, name: str) -> str:
    """The fully qualified id "tenant/name" after checking both parts."""
    return f"{check_tenant(tenant)}/{check_memory_name(name)}"


def split(qname: str) -> tuple[str, str]:
    tenant, _, name = qname.partition("/")
    return tenant, name
