"""TLS material made in the test (trustme): a CA, a server certificate for 127.0.0.1/localhost and a
client certificate on disk (the ``pki`` fixture), and the listener settings and raw request that
use them. Registered as a pytest plugin by conftest.py."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support import read_response


@dataclass
class Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate, on disk."""

    ca: trustme.CA
    dir: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path

    def client_context(self, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_cert:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context

    def reissue_server_cert(self) -> bytes:
        """Overwrite the server certificate and key files with a new pair; returns the new cert's DER."""
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        write_cert(cert, self.cert_file, self.key_file)
        return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def write_cert(cert: trustme.LeafCert, cert_file: Path, key_file: Path) -> None:
    key_file.write_bytes(cert.private_key_pem.bytes())
    cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    pki = Pki(
        ca,
        tmp_path,
        tmp_path / "ca.pem",
        tmp_path / "server.pem",
        tmp_path / "server.key",
        tmp_path / "client.pem",
        tmp_path / "client.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    write_cert(ca.issue_cert("127.0.0.1", "localhost"), pki.cert_file, pki.key_file)
    write_cert(ca.issue_cert("gateway-client.test"), pki.client_cert_file, pki.client_key_file)
    return pki


def tls_listener(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file), **extra}


async def tls_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw.example\r\n\r\n".encode())
    return (await asyncio.wait_for(read_response(reader), 5)).status
