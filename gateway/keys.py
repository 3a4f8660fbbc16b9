"""The typed keys under which shared objects hang off both ``web.Application``s, declared together.

A leaf: a handler module that only needs to reach the gateway's state imports this, not
``gateway.state`` (which names every feature's type). ``GatewayState`` is named for mypy only;
aiohttp uses the key's type argument for its ``repr`` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.state import GatewayState

__all__ = ["STATE"]

STATE: web.AppKey[GatewayState] = web.AppKey("gateway_state")
