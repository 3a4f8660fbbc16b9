"""Reading and restoring the operator state (``GET``/``POST /api/v1/state``; see ``statefile``).

The import validates the whole document first (``parse_state``), then applies flags, holds,
plans and read-only switches in one atomic step of the safety store (a Lua script on Redis, the
embedded store's lock otherwise), which refuses the lot if a flag held here would be raised.
Learned noise goes last through the shadow store's public API: it only tunes comparisons, so a
failure there is reported, never a reason to undo the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from typing_extensions import TypedDict

from gateway.errors import StoreUnavailable
from gateway.safety.statefile import StateDocument, export_document, parse_state

if TYPE_CHECKING:
    from gateway.safety.guard import Safety
    from gateway.state import GatewayState

__all__ = ["Imported", "export_state", "import_state"]


class Imported(TypedDict):
    """What an import changed (flags left as they were are listed too) and what it could not apply."""

    flagsChanged: list[str]
    flagsUnchanged: list[str]
    holdsRestored: list[str]
    plans: list[str]
    readOnly: list[str]
    noiseRoutes: list[str]
    warnings: list[str]


log = structlog.get_logger("gateway.safety")


async def export_state(state: GatewayState, safety: Safety) -> StateDocument:
    """Everything an operator set up, as one document; raises StoreUnavailable if the store is down."""
    holds, _ = await safety.store.holds_and_epochs()
    by_id = {e.id: e for e in await safety.store.events(1000)} if holds else {}
    noise = await state.shadow.store.noise()
    return export_document(
        exported_at=datetime.now(UTC).isoformat(),
        flags=state.store.snapshot(),
        holds=holds,
        hold_events={flag: by_id[event_id] for flag, event_id in holds.items() if event_id in by_id},
        plans=await safety.store.plans(),
        switches=await safety.store.switches(),
        drained=safety.drained,
        noise=state.shadow.noise.snapshot() if noise is None else noise,
    )


async def import_state(state: GatewayState, safety: Safety, doc: Any, *, actor: str, reason: str) -> Imported:
    """Validate, then apply atomically; raises InvalidState, SafetyRefused or StoreUnavailable."""
    parsed = parse_state(
        doc, declared=state.store.cache.declared, drained=safety.drained, actor=actor, at=safety.clock()
    )
    changed, restored = await safety.store.restore(parsed, actor=actor, reason=reason)
    state.store.cache.apply({flag: parsed.flags[flag] for flag in changed})  # Redis: pub/sub tells the others
    await safety.sync_switches()
    warnings = list(parsed.warnings)
    if parsed.noise:
        learned = {**state.shadow.noise.snapshot(), **parsed.noise}
        state.shadow.noise.replace(learned)
        try:
            for route, fields in sorted(parsed.noise.items()):
                await state.shadow.store.add_noise(route, fields)
        except StoreUnavailable as exc:
            warnings.append(f"learned noise applied on this instance only: {exc}")
    log.info(
        "state_imported",
        actor=actor,
        reason=reason,
        flags_changed=changed,
        holds_restored=restored,
        plans=sorted(parsed.plans),
        read_only=sorted(parsed.switches),
        noise_routes=sorted(parsed.noise),
    )
    return {
        "flagsChanged": changed,
        "flagsUnchanged": sorted(set(parsed.flags) - set(changed)),
        "holdsRestored": restored,
        "plans": sorted(parsed.plans),
        "readOnly": sorted(parsed.switches),
        "noiseRoutes": sorted(parsed.noise),
        "warnings": warnings,
    }
