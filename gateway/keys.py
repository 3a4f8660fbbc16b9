"""The typed keys under which shared objects hang off the admin ``web.Application``, declared together.

A leaf: a handler module that only needs to reach the gateway's objects imports this, not the
modules that build them; their types are named for mypy only (aiohttp uses a key's type argument
for its ``repr`` alone). All are set by the app factory (``gateway.app.create_admin_app``):

- ``STATE``: what the request path reads (config, flag store, routes, metrics, ...), shared with it;
- ``SAFETY``: the safety net (triggers, rollbacks, plans, read-only switches), built for every
  gateway, enabled or not;
- ``RELOADER``: re-reads the rules file; None when the gateway was started without one;
- ``DRAINING``: set once the server starts draining (``/readyz`` answers 503 from then on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import asyncio

    from gateway.reload import Reloader
    from gateway.safety.guard import Safety
    from gateway.state import GatewayState

__all__ = ["DRAINING", "RELOADER", "SAFETY", "STATE"]

STATE: web.AppKey[GatewayState] = web.AppKey("gateway_state")
SAFETY: web.AppKey[Safety] = web.AppKey("gateway_safety")
RELOADER: web.AppKey[Reloader | None] = web.AppKey("gateway_reloader")
DRAINING: web.AppKey[asyncio.Event] = web.AppKey("gateway_draining")
