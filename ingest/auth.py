"""Who is calling: ``Authorization: Bearer <key>`` -> tenant.

Every transport (HTTP, gRPC) asks an :class:`Authenticator`. In open mode every request
belongs to tenant ``default``; otherwise keys are checked against the database.
"""

from __future__ import annotations

from typing import Protocol

from tokentide.settings import OPEN_MODE_TENANT
from tokentide.tenancy import Redaction, Tenant

#: Optional header naming the tenant a caller means to write to; refused (403) when it is
#: not the key's tenant, so a collector forwarding for several teams cannot mix them up.
TENANT_HEADER = "x-tokentide-tenant"


class Authenticator(Protocol):
    async def start(self) -> None:
        """Load what is needed; must not fail when the database is down (log and retry)."""

    async def stop(self) -> None:
        """Release resources; safe to call twice."""

    async def authenticate(self, authorization: str | None, tenant_hint: str | None) -> Tenant:
        """The tenant of the caller, or raise ``Unauthorized`` (401) / ``Forbidden`` (403)."""
        ...

    @property
    def ready(self) -> bool:
        """Whether requests can be authenticated now."""
        ...


class OpenModeAuthenticator:
    """Single tenant, no authentication: local use only (``TOKENTIDE_OPEN_MODE=1``)."""

    def __init__(self, redaction: Redaction) -> None:
        self._tenant = Tenant(OPEN_MODE_TENANT, redaction=redaction)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def authenticate(self, authorization: str | None, tenant_hint: str | None) -> Tenant:
        return self._tenant

    @property
    def ready(self) -> bool:
        return True
