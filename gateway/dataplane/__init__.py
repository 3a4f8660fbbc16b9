"""The proxy listener's bytes path: client and upstream protocols on uvloop, parsed by httptools.

``connection`` (one client connection, its parser and pipeline), ``exchange`` (one request and
its answer, flow control, tunnels), ``pool`` (upstream keep-alive pools), ``listener`` (accept,
deadline sweep, drain, TLS), ``wire`` (heads and chunk framing, pure). No framework objects:
the request path (``gateway.proxy``) sees exchanges, not requests.
"""
