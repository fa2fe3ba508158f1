"""The server's egress authority in the sandbox's trust store.

The host's egress proxy terminates TLS to hosts with header transforms, with certificates of an
authority of its own, so the sandbox trusts that authority and its programs need no flag. At the
agent's start, as the sandbox's root, its certificate (the host never sends the key) is added to the
system bundles present and to the local certificates that update-ca-certificates reads, so that a
bundle rebuilt in the sandbox keeps it. The variables returned point the programs that carry roots of
their own (requests, httpx, Node) at the same store.
"""

from __future__ import annotations

import contextlib
import os
import sys

# The system bundles of the distributions' ca-certificates packages; the first is made when none is there.
BUNDLES = (
    "etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "etc/ssl/ca-bundle.pem",  # openSUSE
)
LOCAL_CERTIFICATE = "usr/local/share/ca-certificates/e2b-local-egress.crt"


def _add_to(path: str, pem: str) -> bool:
    """Append `pem` to the bundle at `path` unless it holds it already; False when it cannot."""
    try:
        with open(path, "a+") as bundle:
            bundle.seek(0)
            text = bundle.read()
            if pem.strip() not in text:
                bundle.write(("\n" if text and not text.endswith("\n") else "") + pem.strip() + "\n")
    except OSError as exc:
        print(f"e2b-local agent: cannot add the egress authority to {path}: {exc}", file=sys.stderr, flush=True)
        return False
    return True


def install(pem: str, root: str = "/") -> dict[str, str]:
    """Trust `pem` (a certificate) in the file system under `root`; the variables that make programs use it."""
    local = os.path.join(root, LOCAL_CERTIFICATE)
    try:
        os.makedirs(os.path.dirname(local), mode=0o755, exist_ok=True)
        with open(local + ".tmp", "w") as f:
            f.write(pem.strip() + "\n")
        os.chmod(local + ".tmp", 0o644)
        os.replace(local + ".tmp", local)
    except OSError as exc:
        print(f"e2b-local agent: cannot write {local}: {exc}", file=sys.stderr, flush=True)
        return {}
    present = [path for path in (os.path.join(root, b) for b in BUNDLES) if os.path.isfile(path)]
    if not present:
        first = os.path.join(root, BUNDLES[0])
        with contextlib.suppress(OSError):  # then the bundle's own write says why
            os.makedirs(os.path.dirname(first), mode=0o755, exist_ok=True)
        present = [first]
    trusted = [path for path in present if _add_to(path, pem)]
    env = {"NODE_EXTRA_CA_CERTS": "/" + LOCAL_CERTIFICATE}
    if trusted:
        bundle = "/" + os.path.relpath(trusted[0], root)
        env.update(SSL_CERT_FILE=bundle, REQUESTS_CA_BUNDLE=bundle)
    return env
