"""The safety net: trigger windows, automatic rollback, events, health checks, rollout plans,
read-only legacy. ``gateway.safety.guard.Safety`` is the one object the app holds (its docstring maps the modules)."""
