"""TLS for both legs: the gateway's server certificate and upstream client contexts.

Without a configured certificate the gateway makes a self-signed one into
data_dir on first start and reuses it after, so clients can pin it
(`sslrootcert=<data_dir>/tls/server.crt sslmode=verify-full`).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("airlock.tls")

SELF_SIGNED_NAMES = ("localhost", "127.0.0.1", "::1")


def ensure_self_signed(
    directory: Path, names: tuple[str, ...] = SELF_SIGNED_NAMES
) -> tuple[Path, Path]:
    """Return (cert, key) under directory, generating them the first time."""
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock gateway")])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("generated a self-signed TLS certificate at %s", cert_path)
    return cert_path, key_path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def upstream_context(sslmode: str, sslrootcert: Path | None) -> ssl.SSLContext | None:
    """libpq's sslmode semantics for the gateway's own upstream connection."""
    if sslmode in ("disable", "allow"):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if sslmode in ("prefer", "require"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if sslrootcert is not None:
        context.load_verify_locations(cafile=str(sslrootcert))
    else:
        context.load_default_certs()
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = sslmode == "verify-full"
    return context
