"""The local certificate authority of domain mode, and the server certificate it signs.

Created on first start in the data directory's `tls/` folder: the authority's key never leaves it
(mode 0600, like every key there). The server certificate covers `api.<domain>`, `*.<domain>` and
`<domain>`, and is issued again when the domain changes or it nears its end.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only, replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _authority(files: TlsFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The authority, created when absent (or unreadable as a pair)."""
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > _now():
            os.chmod(files.ca_key, 0o600)
            return cert, key
    except (FileNotFoundError, ValueError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    # A serial of its own in the name: a browser that saw an older authority of the same name
    # must not confuse the two.
    serial = x509.random_serial_number()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "e2b-local"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{AUTHORITY_NAME} {serial % 10**8:08d}")])
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=AUTHORITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _key_pem(key))
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(files.ca_cert, 0o644)
    return cert, key


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
            and cert.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_DAYS))


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
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt = [x509.DNSName(name) for name in server_names(domain)]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"api.{domain}")]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.server_key, _key_pem(key))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                  + ca.public_bytes(serialization.Encoding.PEM))
    return files
