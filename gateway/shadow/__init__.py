"""Shadow traffic: mirror a sample of requests to the side that is not serving and compare.

One module per concern; the pure ones do no I/O and are tested without sockets:

    settings.py   frozen config models: per-route ShadowRule, global ShadowConfig
    paths.py      JSON path patterns (``$.data[*].updatedAt``) and matching          (pure)
    normalize.py  value normalizers: UUIDs, ISO timestamps                           (pure)
    compare.py    status, headers and structural JSON / byte-wise body comparison   (pure)
    noise.py      learned ignores: fields that differ between two same-side answers (pure)
    redact.py     secrets and PII removed from everything stored or logged          (pure)
    stats.py      per-route aggregation and the parity report rows                 (pure)
    store.py      where results go: in-process ring, or Redis (one choice at start-up)
    mirror.py     the request-path tap, the bounded queue and its workers (I/O)
"""
