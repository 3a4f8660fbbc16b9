"""Shadow traffic: mirror a sample of requests to the side that is not serving and compare.

One module per concern; the pure ones do no I/O and are tested without sockets:

    settings.py   frozen config models: per-route ShadowRule, global ShadowConfig
    policy.py     which routes are mirrored, rules compiled once                     (pure)
    paths.py      JSON path patterns (``$.data[*].updatedAt``) and matching          (pure)
    normalize.py  value normalizers: UUIDs, ISO timestamps                           (pure)
    compare.py    status, headers and structural JSON / byte-wise body comparison   (pure)
    encoding.py   gzip/deflate bodies decoded (bounded) before comparing            (pure)
    judge.py      one comparison as a picklable task -> verdict (redacted, clipped) (pure)
    pool.py       the comparison processes: comparisons never run on the event loop
    noise.py      learned ignores: fields that differ between two same-side answers (pure)
    redact.py     secrets and PII removed from everything stored or logged          (pure)
    stats.py      per-route aggregation and the parity report rows                 (pure)
    render.py     the report as a table or Markdown, mismatches as readable diffs  (pure)
    mismatchlog.py mismatches counted per route for one summary log line per interval (pure)
    store.py      where results go: in-process ring, or Redis (one choice at start-up)
    tap.py        the request path's part: capture the answer up to a cap as it streams
    mirror.py     sampling, the bounded queue, its workers: replay, compare, record (I/O)
"""
