"""Settings: every E2B_LOCAL_* variable read once, validated, and a bad value named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2b_local.settings import DEFAULT_PORT, Settings, SettingsError


def test_defaults_and_home(tmp_path: Path) -> None:
    settings = Settings.from_environ({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.home == tmp_path.resolve() / "e2b-local"
    assert settings.port == DEFAULT_PORT
    assert (settings.cpu_count, settings.memory_mb, settings.disk_mb, settings.max_pids) == (2, 1024, 10240, 1024)
    assert settings.pool_size == 1 and settings.boot_concurrency >= 1
    assert settings.paths.rootfs == settings.home / "rootfs"


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = Settings.from_environ({
        "E2B_LOCAL_HOME": str(tmp_path / "home"), "E2B_LOCAL_PORT": "50123", "E2B_LOCAL_ROOTFS": str(tmp_path / "fs"),
        "E2B_LOCAL_CPU_COUNT": "1", "E2B_LOCAL_MEMORY_MB": "512", "E2B_LOCAL_DISK_MB": "32",
        "E2B_LOCAL_MAX_PIDS": "64", "E2B_LOCAL_POOL_SIZE": "0", "E2B_LOCAL_BOOT_CONCURRENCY": "2",
    })
    assert settings.home == tmp_path / "home" and settings.port == 50123
    assert settings.paths.rootfs == tmp_path / "fs"
    assert (settings.cpu_count, settings.memory_mb, settings.disk_mb, settings.max_pids) == (1, 512, 32, 64)
    assert (settings.pool_size, settings.boot_concurrency) == (0, 2)


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    settings = Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path), "E2B_LOCAL_PORT": "", "E2B_LOCAL_ROOTFS": ""})
    assert settings.port == DEFAULT_PORT and settings.paths.rootfs == tmp_path / "rootfs"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("E2B_LOCAL_PORT", "abc", "E2B_LOCAL_PORT must be a port number (1-65535), got 'abc'"),
    ("E2B_LOCAL_PORT", "0", "E2B_LOCAL_PORT must be a port number (1-65535), got '0'"),
    ("E2B_LOCAL_PORT", "65536", "E2B_LOCAL_PORT must be a port number (1-65535), got '65536'"),
    ("E2B_LOCAL_CPU_COUNT", "0", "E2B_LOCAL_CPU_COUNT must be a positive integer, got '0'"),
    ("E2B_LOCAL_MEMORY_MB", "1.5", "E2B_LOCAL_MEMORY_MB must be a positive integer, got '1.5'"),
    ("E2B_LOCAL_DISK_MB", "-1", "E2B_LOCAL_DISK_MB must be a positive integer, got '-1'"),
    ("E2B_LOCAL_MAX_PIDS", "many", "E2B_LOCAL_MAX_PIDS must be a positive integer, got 'many'"),
    ("E2B_LOCAL_POOL_SIZE", "-1", "E2B_LOCAL_POOL_SIZE must be a non-negative integer, got '-1'"),
    ("E2B_LOCAL_BOOT_CONCURRENCY", "0", "E2B_LOCAL_BOOT_CONCURRENCY must be a positive integer, got '0'"),
])
def test_a_bad_value_names_the_variable(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path), name: value})
    assert str(info.value) == message


def test_the_cli_exits_2_with_one_line_for_a_bad_value(tmp_path: Path) -> None:
    env = {**os.environ, "E2B_LOCAL_HOME": str(tmp_path / "home"), "E2B_LOCAL_PORT": "abc"}
    result = subprocess.run([sys.executable, "-m", "e2b_local", "status"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "e2b-local: error: E2B_LOCAL_PORT must be a port number (1-65535), got 'abc'"]
    assert result.stdout == ""
    assert not (tmp_path / "home").exists()  # refused before anything was done


def test_domain_mode_settings(tmp_path: Path) -> None:
    defaults = Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path)})
    assert (defaults.domain, defaults.https_port, defaults.sdk_domain) == (
        "e2b.localhost", 49443, "e2b.localhost:49443")
    assert defaults.paths.tls == tmp_path.resolve() / "tls"
    custom = Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path), "E2B_LOCAL_DOMAIN": "Sandboxes.Test.",
                                    "E2B_LOCAL_HTTPS_PORT": "443"})
    assert (custom.domain, custom.sdk_domain) == ("sandboxes.test", "sandboxes.test")
    assert Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path), "E2B_LOCAL_HTTPS_PORT": "0"}).https_port == 0
    for bad in ("localhost", "e2b.localhost:443", "a..b", "-x.test", "x_y.test"):
        with pytest.raises(SettingsError, match="E2B_LOCAL_DOMAIN"):
            Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path), "E2B_LOCAL_DOMAIN": bad})
    with pytest.raises(SettingsError, match="E2B_LOCAL_HTTPS_PORT"):
        Settings.from_environ({"E2B_LOCAL_HOME": str(tmp_path), "E2B_LOCAL_HTTPS_PORT": "70000"})
