"""The local certificate authority of domain mode, and the server certificate it signs.

Created on first start in the data directory's `tls/` folder: the authority's key never leaves it
(mode 0600, like every key there). The server certificate covers `api.<domain>`, `*.<domain>` and
`<domain>`, and is issued again when the domain changes or it nears its end.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from e2b_local.control import certificates

AUTHORITY_NAME = "e2b-local certificate authority"
AUTHORITY_DAYS = 3650
# Short enough for clients that cap a server certificate's lifetime (browsers: 398 days).
SERVER_DAYS = 365
# Issued again when fewer days than this remain.
RENEW_DAYS = 30


@dataclass(frozen=True)
class TlsFiles:
    """Where the authority and the server certificate live."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        """The server certificate followed by the authority's (the chain a client is sent)."""
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def bundle(self) -> Path:
        """The system's trusted roots plus the authority (for SSL_CERT_FILE and REQUESTS_CA_BUNDLE)."""
        return self.directory / "ca-bundle.pem"


def system_roots() -> Path | None:
    """The system's bundle of trusted roots, else certifi's."""
    import ssl

    for candidate in (ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt",
                      "/etc/pki/tls/certs/ca-bundle.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


def write_bundle(files: TlsFiles) -> None:
    """(Re)write the bundle from the system's roots as they are now, and the authority."""
    roots = system_roots()
    ours = files.ca_cert.read_bytes()
    text = roots.read_bytes() if roots is not None else b""
    if ours.strip() not in text:
        text = text.rstrip(b"\n") + b"\n" + ours if text else ours
    tmp = files.bundle.with_name(files.bundle.name + ".tmp")
    tmp.write_bytes(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, files.bundle)


def _authority(files: TlsFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The authority, created when absent (or unreadable as a pair)."""
    return certificates.authority(files.ca_cert, files.ca_key, AUTHORITY_NAME, AUTHORITY_DAYS)


def server_names(domain: str) -> list[str]:
    """The DNS names the server certificate covers for `domain`."""
    return [domain, f"api.{domain}", f"*.{domain}"]


def _current(files: TlsFiles, ca: x509.Certificate, domain: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        files.server_key.stat()
    except (FileNotFoundError, ValueError):
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        return False
    return (cert.issuer == ca.subject and set(names) >= set(server_names(domain))
            and cert.not_valid_after_utc - certificates.now() > datetime.timedelta(days=RENEW_DAYS))


def ensure(directory: Path, domain: str) -> TlsFiles:
    """The authority and a current server certificate for `domain`, created as needed."""
    # Readable by others (the certificates and the bundle are public); each key file is 0600.
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    files = TlsFiles(directory)
    ca, ca_key = _authority(files)
    write_bundle(files)
    if _current(files, ca, domain):
        os.chmod(files.server_key, 0o600)
        return files
    names = list(dict.fromkeys([f"api.{domain}", *server_names(domain), "127.0.0.1", "::1"]))
    cert, key = certificates.server_certificate(ca, ca_key, names, SERVER_DAYS)
    certificates.write_private(files.server_key, certificates.key_pem(key))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                  + ca.public_bytes(serialization.Encoding.PEM))
    return files
