"""The admin listener: health, readiness, metrics and the flag API. Never on the proxy port."""
