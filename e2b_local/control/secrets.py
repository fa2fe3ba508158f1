"""Secrets: named values that the egress proxy puts into a sandbox's outbound requests.

A value is write-only: create and update take it, nothing reads it back but the egress proxy, which
resolves `${e2b.secrets.<name>}` placeholders on the host side of a sandbox's connections, so the
value never enters a sandbox. Values are stored in the registry sealed with a key of the data
directory's own (Fernet: AES-128-CBC with an HMAC-SHA256), in a file readable by its owner only.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from e2b_local.control.errors import ApiError
from e2b_local.control.registry import Registry, SecretRecord

ID_PREFIX = "sec_"
# What the SDK refuses in a name: it is interpolated into the `${e2b.secrets.<name>}` placeholder.
INVALID_NAME = re.compile(r"[{}\x00-\x1f\x7f-\x9f]")
PLACEHOLDER = re.compile(r"\$\{e2b\.secrets\.([^{}\x00-\x1f\x7f-\x9f]+)\}")
MAX_NAME = 255
MAX_VALUE = 64 * 1024
# E2B's metadata limits.
MAX_METADATA_ENTRIES, MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_METADATA_BYTES = 32, 128, 1024, 8192


def secret_not_found(secret: str) -> ApiError:
    return ApiError(404, f"secret '{secret}' not found")


def _key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    return key


def check_name(name: object) -> str:
    """A new secret's name, canonical (lower case), or 400."""
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "'name' must be a non-empty string")
    if INVALID_NAME.search(name) or len(name) > MAX_NAME:
        raise ApiError(400, "a secret name cannot contain '{', '}' or control characters, "
                            f"and has at most {MAX_NAME} characters")
    canonical = name.lower()
    if canonical.startswith(ID_PREFIX):
        raise ApiError(400, f"the '{ID_PREFIX}' prefix is reserved for secret identifiers")
    return canonical


def check_value(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(400, "'value' must be a non-empty string")
    if len(value.encode()) > MAX_VALUE:
        raise ApiError(400, f"'value' is longer than {MAX_VALUE} bytes")
    return value


def check_metadata(metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ApiError(400, "'metadata' must be an object of strings")
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ApiError(400, f"'metadata' has more than {MAX_METADATA_ENTRIES} entries")
    total = 0
    for key, value in metadata.items():
        if len(key.encode()) > MAX_KEY_BYTES or len(value.encode()) > MAX_VALUE_BYTES:
            raise ApiError(400, f"'metadata' keys are at most {MAX_KEY_BYTES} bytes, values {MAX_VALUE_BYTES}")
        total += len(key.encode()) + len(value.encode())
    if total > MAX_METADATA_BYTES:
        raise ApiError(400, f"'metadata' is larger than {MAX_METADATA_BYTES} bytes")
    return dict(metadata)


class Secrets:
    """The secrets of this server: metadata in the registry, values sealed."""

    def __init__(self, registry: Registry, key_file: Path) -> None:
        self.registry = registry
        self._fernet = Fernet(_key(key_file))
        self._lock = threading.Lock()

    def all(self) -> list[SecretRecord]:
        """Every secret, oldest first."""
        return sorted(self.registry.secrets(), key=lambda r: (r.created_at, r.secret_id))

    def find(self, secret: str) -> SecretRecord | None:
        """The secret whose id or (case-insensitive) name is `secret`."""
        wanted = secret.lower()
        for record in self.registry.secrets():
            if record.secret_id == secret or record.name == wanted:
                return record
        return None

    def get(self, secret: str) -> SecretRecord:
        found = self.find(secret)
        if found is None:
            raise secret_not_found(secret)
        return found

    def create(self, name: object, value: object, metadata: object) -> SecretRecord:
        canonical, plain, meta = check_name(name), check_value(value), check_metadata(metadata)
        with self._lock:
            if self.find(canonical) is not None:
                raise ApiError(409, f"secret '{canonical}' already exists")
            now = time.time()
            record = SecretRecord(secret_id=ID_PREFIX + secrets.token_hex(12), name=canonical, version=1,
                                  sealed=self._seal(plain), created_at=now, updated_at=now, metadata=meta)
            self.registry.put_secret(record)
        return record

    def update(self, secret: str, value: object, metadata: object) -> SecretRecord:
        plain = check_value(value)
        meta = None if metadata is None else check_metadata(metadata)
        with self._lock:
            record = self.get(secret)
            record.version += 1
            record.sealed = self._seal(plain)
            record.updated_at = time.time()
            if meta is not None:
                record.metadata = meta
            self.registry.put_secret(record)
        return record

    def delete(self, secret: str) -> None:
        with self._lock:
            self.registry.delete_secret(self.get(secret).secret_id)

    def value(self, secret: str) -> str | None:
        """The current value of the secret named (or identified by) `secret`, for the egress proxy only."""
        record = self.find(secret)
        if record is None:
            return None
        try:
            return self._fernet.decrypt(record.sealed.encode()).decode()
        except InvalidToken:
            return None

    def fill(self, text: str) -> str | None:
        """`text` with every secret placeholder replaced by its value; None if one names no secret."""
        missing = False

        def replace(match: re.Match[str]) -> str:
            nonlocal missing
            found = self.value(match.group(1))
            if found is None:
                missing = True
                return ""
            return found

        filled = PLACEHOLDER.sub(replace, text)
        return None if missing else filled

    def _seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

