"""Settings: every E2B_LOCAL_* variable read once, validated, and a bad value named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2b_local.settings import CATALOGUE, DEFAULT_PORT, SYSTEM_HOME, Settings, SettingsError, _home


def test_defaults_and_home(tmp_path: Path) -> None:
    settings = Settings.from_environ({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.home == (SYSTEM_HOME if os.geteuid() == 0 else tmp_path.resolve() / "e2b-local")
    assert settings.port == DEFAULT_PORT
    assert (settings.cpu_count, settings.memory_mb, settings.disk_mb, settings.max_pids) == (2, 1024, 10240, 1024)
    assert settings.pool_size == 1 and settings.pool_max == 10 and settings.boot_concurrency >= 1
    assert (settings.build_concurrency, settings.ready_timeout, settings.pull_timeout) == (2, 120, 600)
    assert settings.paths.rootfs == settings.home / "rootfs"
    assert settings.volume_mb == 10240 and settings.paths.volumes == settings.home / "volumes"


def test_root_has_one_data_directory_whatever_its_home(tmp_path: Path) -> None:
    system = tmp_path / "var-lib"
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    assert _home(None, first, root=True, system_home=system) == _home(None, second, root=True, system_home=system)
    assert _home(None, first, root=True, system_home=system) == system
    assert _home(None, first, root=False, system_home=system) == tmp_path / "a" / "e2b-local"
    assert _home(str(tmp_path / "mine"), first, root=True, system_home=system) == tmp_path / "mine"


def test_an_existing_per_home_directory_of_root_keeps_working(tmp_path: Path) -> None:
    system, xdg = tmp_path / "var-lib", tmp_path / "share"
    (xdg / "e2b-local").mkdir(parents=True)
    (xdg / "e2b-local" / "api-key").write_text("e2b_" + "0" * 40)
    assert _home(None, str(xdg), root=True, system_home=system) == xdg / "e2b-local"
    system.mkdir()  # the id-range claims alone do not make it the data directory
    (system / "id-ranges").mkdir()
    assert _home(None, str(xdg), root=True, system_home=system) == xdg / "e2b-local"
    (system / "api-key").write_text("e2b_" + "1" * 40)  # once it holds a key, it wins
    assert _home(None, str(xdg), root=True, system_home=system) == system


def test_the_catalogue_names_every_setting() -> None:
    fields = {f for f in Settings.__dataclass_fields__}
    assert {info.attr for info in CATALOGUE} == fields
    assert all(info.name.startswith("E2B_LOCAL_") and info.meaning and info.default for info in CATALOGUE)


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = Settings.from_environ({
        "E2B_LOCAL_HOME": str(tmp_path / "home"), "E2B_LOCAL_PORT": "50123", "E2B_LOCAL_ROOTFS": str(tmp_path / "fs"),
        "E2B_LOCAL_CPU_COUNT": "1", "E2B_LOCAL_MEMORY_MB": "512", "E2B_LOCAL_DISK_MB": "32",
        "E2B_LOCAL_MAX_PIDS": "64", "E2B_LOCAL_POOL_SIZE": "0", "E2B_LOCAL_BOOT_CONCURRENCY": "2",
        "E2B_LOCAL_VOLUME_MB": "64", "E2B_LOCAL_TEMPLATE_POOL": "5", "E2B_LOCAL_POOL_MAX": "7",
        "E2B_LOCAL_LOG_REQUESTS": "1", "E2B_LOCAL_MERGE_PAGES": "1",
        "E2B_LOCAL_BUILD_CONCURRENCY": "3", "E2B_LOCAL_READY_TIMEOUT": "5", "E2B_LOCAL_PULL_TIMEOUT": "30",
    })
    assert settings.home == tmp_path / "home" and settings.port == 50123
    assert settings.paths.rootfs == tmp_path / "fs"
    assert (settings.cpu_count, settings.memory_mb, settings.disk_mb, settings.max_pids) == (1, 512, 32, 64)
    assert (settings.pool_size, settings.boot_concurrency, settings.template_pool) == (0, 2, 5)
    assert settings.pool_max == 7
    assert settings.volume_mb == 64
    assert settings.log_requests is True and settings.merge_pages is True
    assert (settings.build_concurrency, settings.ready_timeout, settings.pull_timeout) == (3, 5, 30)


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
    ("E2B_LOCAL_POOL_MAX", "many", "E2B_LOCAL_POOL_MAX must be a non-negative integer, got 'many'"),
    ("E2B_LOCAL_VOLUME_MB", "8", "E2B_LOCAL_VOLUME_MB must be an integer of at least 16, got '8'"),
    ("E2B_LOCAL_BOOT_CONCURRENCY", "0", "E2B_LOCAL_BOOT_CONCURRENCY must be a positive integer, got '0'"),
    ("E2B_LOCAL_LOG_REQUESTS", "yes", "E2B_LOCAL_LOG_REQUESTS must be 0 or 1, got 'yes'"),
    ("E2B_LOCAL_MERGE_PAGES", "2", "E2B_LOCAL_MERGE_PAGES must be 0 or 1, got '2'"),
    ("E2B_LOCAL_BUILD_CONCURRENCY", "0", "E2B_LOCAL_BUILD_CONCURRENCY must be a positive integer, got '0'"),
    ("E2B_LOCAL_READY_TIMEOUT", "2m", "E2B_LOCAL_READY_TIMEOUT must be a positive integer, got '2m'"),
    ("E2B_LOCAL_PULL_TIMEOUT", "-5", "E2B_LOCAL_PULL_TIMEOUT must be a positive integer, got '-5'"),
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
