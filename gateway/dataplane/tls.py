"""TLS contexts: the proxy listener's (reloadable) and each https:// upstream's (always verified)."""

from __future__ import annotations

import ssl

from gateway.config import TlsConfig, UpstreamConfig
from gateway.errors import ConfigError

__all__ = ["load_server_certificates", "server_context", "upstream_context"]


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """The listener's context; ``load_server_certificates`` refreshes it in place on SIGHUP, so new
    handshakes get the new certificate while open connections keep theirs."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    load_server_certificates(context, config)
    return context


def load_server_certificates(context: ssl.SSLContext, config: TlsConfig) -> None:
    assert config.cert_file is not None and config.key_file is not None
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.cert_file/key_file: cannot load {config.cert_file}: {_why(exc)}") from exc
    if config.client_ca_file is not None:
        try:
            context.load_verify_locations(config.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.client_ca_file: cannot load {config.client_ca_file}: {_why(exc)}") from exc
        context.verify_mode = ssl.CERT_REQUIRED


def upstream_context(name: str, config: UpstreamConfig) -> ssl.SSLContext | None:
    """None for http:// upstreams; https:// ones verify the certificate and host name."""
    if config.base.scheme != "https":
        return None
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstreams.{name}.ca_file: cannot load {config.ca_file}: {_why(exc)}") from exc
    context.set_alpn_protocols(["http/1.1"])
    if config.client_cert_file is not None:
        try:
            context.load_cert_chain(config.client_cert_file, config.client_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"upstreams.{name}.client_cert_file: cannot load {config.client_cert_file}: {_why(exc)}"
            ) from exc
    return context


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)
