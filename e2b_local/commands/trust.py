"""The domain-mode parts of the CLI: the environment for `E2B_DOMAIN` alone, and `trust` in the system store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from e2b_local.control.domain.ca import TlsFiles
from e2b_local.settings import Settings

# Debian's and Ubuntu's store of local authorities, read by update-ca-certificates.
SYSTEM_STORE = Path("/usr/local/share/ca-certificates")
STORE_NAME = "e2b-local.crt"


def domain_environment(settings: Settings, api_key: str) -> dict[str, str]:
    """What the SDKs and common clients need to reach the server by `E2B_DOMAIN` alone, over TLS."""
    files = TlsFiles(settings.paths.tls)
    return {
        "E2B_DOMAIN": settings.sdk_domain,
        "E2B_API_KEY": api_key,
        # Python's ssl, pyqwest (the SDK's transport), curl and git read SSL_CERT_FILE; requests reads
        # its own variable; Node adds NODE_EXTRA_CA_CERTS to its built-in roots.
        "SSL_CERT_FILE": str(files.bundle),
        "REQUESTS_CA_BUNDLE": str(files.bundle),
        "NODE_EXTRA_CA_CERTS": str(files.ca_cert),
    }


def trust(settings: Settings, remove: bool, store: Path = SYSTEM_STORE) -> int:
    """Add the authority to (or remove it from) the system's trusted roots; exit code."""
    target = store / STORE_NAME
    updater = shutil.which("update-ca-certificates")
    if updater is None:
        print("e2b-local: update-ca-certificates not found (apt-get install ca-certificates)", file=sys.stderr)
        return 1
    if remove:
        if not target.exists():
            print("the e2b-local authority is not in the system store", file=sys.stderr)
            return 0
        target.unlink()
    else:
        files = TlsFiles(settings.paths.tls)
        if not files.ca_cert.exists():
            print("e2b-local has no authority yet: start it once first (e2b-local start)", file=sys.stderr)
            return 1
        store.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files.ca_cert, target)
        target.chmod(0o644)
    result = subprocess.run([updater, "--fresh"] if remove else [updater], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"e2b-local: update-ca-certificates failed: {result.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"the e2b-local authority was {'removed from' if remove else 'added to'} the system store "
          f"({target}); browsers with their own store (Firefox, Chromium's NSS database) need it imported there",
          file=sys.stderr)
    return 0
