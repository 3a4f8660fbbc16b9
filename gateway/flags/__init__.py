"""The flag store: one protocol, an embedded and a Redis implementation.

The request path never waits on the store: it reads ``store.snapshot()``, an in-process
mapping that the store replaces whole whenever it learns of a change.
"""

from gateway.flags.memory import MemoryFlagStore
from gateway.flags.store import FlagChange, FlagStore, StoreHealth

__all__ = ["FlagChange", "FlagStore", "MemoryFlagStore", "StoreHealth"]
