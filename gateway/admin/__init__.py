"""The admin listener: probes, metrics, the flag and safety API, parity, the sign-off, the status
page and the OpenAPI document generated from the handlers' schemas. Never on the proxy port."""
