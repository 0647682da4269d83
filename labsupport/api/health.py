"""`GET /health`: liveness, for load balancers and for a client waiting on a restart.

It answers even while injected failures are on (the guards exempt it), and
says `shutting down` once the rebuild service refuses new rebuilds.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from labsupport.api.state import service_of

__all__ = ["router"]

router = APIRouter(tags=["service"])


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """Say the server is up (and whether it accepts rebuilds)."""
    return {"status": "ok" if service_of(request).accepting else "shutting down"}
