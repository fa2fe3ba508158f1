"""Attacks on sandbox traffic, secrets on disk and request bodies, each tried the way an outsider would.

Requests to a sandbox without a token, or with another sandbox's, must be refused on every route the
SDK uses; the unmodified SDK (sync and async, code-interpreter contexts included) must keep working;
`/init` is never reachable from outside; the data directory keeps its secrets from other host users;
an oversized control-plane body is refused without the server buffering it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import LocalServer, start_server, stop_server
from e2b import AuthenticationException, ConnectionConfig
from e2b import Sandbox as BaseSandbox
from e2b_code_interpreter import AsyncSandbox, Sandbox

ENVD = "49983"
INTERPRETER = "49999"
NOBODY = 65534


@pytest.fixture(scope="module")
def pair(e2b_server: LocalServer) -> Iterator[tuple[Sandbox, Sandbox]]:
    """Two code-interpreter sandboxes: the victim and the one whose tokens are tried on it."""
    victim = Sandbox.create()
    other = Sandbox.create()
    try:
        yield victim, other
    finally:
        victim.kill()
        other.kill()


def _headers(sbx: Sandbox, port: str, **extra: str) -> dict[str, str]:
    return {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": port, **extra}


def _route_requests(server: LocalServer, sbx: Sandbox) -> list[tuple[str, str, str, dict[str, object]]]:
    """One request of each kind the SDK sends to a sandbox: (port, method, path, httpx keyword arguments)."""
    connect = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    return [
        (ENVD, "POST", "/process.Process/List", {"json": {}, "headers": connect}),
        (ENVD, "POST", "/filesystem.Filesystem/Stat", {"json": {"path": "/etc/hostname"}, "headers": connect}),
        (ENVD, "GET", "/files", {"params": {"path": "/etc/hostname"}}),
        (ENVD, "POST", "/files", {"params": {"path": "/tmp/planted"}, "files": {"file": ("x", b"planted")}}),
        (ENVD, "GET", "/envs", {}),
        (INTERPRETER, "POST", "/execute", {"json": {"code": "1", "context_id": None, "language": None,
                                                    "env_vars": None}}),
        (INTERPRETER, "GET", "/contexts", {}),
        (INTERPRETER, "POST", "/contexts", {"json": {"language": "python"}}),
        (INTERPRETER, "POST", "/contexts/some-context/restart", {}),
        (INTERPRETER, "DELETE", "/contexts/some-context", {}),
    ]


def _assert_refused(response: httpx.Response, path: str) -> None:
    assert response.status_code == 401, (path, response.status_code, response.text)
    body = response.json()
    rpc = path.startswith(("/process.", "/filesystem."))
    assert body["code"] == ("unauthenticated" if rpc else 401), (path, body)
    assert body["message"]


def _send(server: LocalServer, sbx: Sandbox, port: str, method: str, path: str, kwargs: dict[str, object],
          **headers: str) -> httpx.Response:
    extra = dict(kwargs)
    extra["headers"] = {**_headers(sbx, port, **headers), **dict(extra.get("headers") or {})}  # type: ignore[arg-type]
    return httpx.request(method, server.url + path, timeout=30, **extra)  # type: ignore[arg-type]


def test_every_route_refuses_a_request_without_a_token(e2b_server: LocalServer,
                                                       pair: tuple[Sandbox, Sandbox]) -> None:
    victim, _ = pair
    before = victim.run_code("state_kept = 'yes'")
    assert before.error is None
    for port, method, path, kwargs in _route_requests(e2b_server, victim):
        _assert_refused(_send(e2b_server, victim, port, method, path, kwargs), path)
    # Nothing got through: no file planted, the default context kept its state.
    assert not victim.files.exists("/tmp/planted")
    assert victim.run_code("state_kept").text == "yes"


def test_another_sandboxs_tokens_are_refused(e2b_server: LocalServer, pair: tuple[Sandbox, Sandbox]) -> None:
    victim, other = pair
    assert other.traffic_access_token and other.traffic_access_token != victim.traffic_access_token
    stolen = {"X-Access-Token": other._envd_access_token, "E2B-Traffic-Access-Token": other.traffic_access_token}
    for port, method, path, kwargs in _route_requests(e2b_server, victim):
        _assert_refused(_send(e2b_server, victim, port, method, path, kwargs, **stolen), path)
    # The other sandbox's signed URL does not open the victim's files either.
    url = other.download_url("/etc/hostname")
    response = httpx.get(url, headers=_headers(victim, ENVD), timeout=30)
    assert response.status_code == 401 and response.json()["code"] == 401
    assert not victim.files.exists("/tmp/planted")


def test_the_sdk_with_a_wrong_token_gets_authentication_errors(e2b_server: LocalServer,
                                                               pair: tuple[Sandbox, Sandbox]) -> None:
    victim, other = pair
    headers = _headers(victim, ENVD, **{"X-Access-Token": other._envd_access_token})
    impostor = BaseSandbox(sandbox_id=victim.sandbox_id, sandbox_domain=None, envd_version=victim._envd_version,
                           envd_access_token=other._envd_access_token, traffic_access_token=None,
                           connection_config=ConnectionConfig(extra_sandbox_headers=headers))
    with pytest.raises(AuthenticationException):
        impostor.commands.run("id")
    with pytest.raises(AuthenticationException):
        impostor.files.read("/etc/hostname")
    with pytest.raises(AuthenticationException):
        impostor.files.write("/tmp/planted", "x")
    with pytest.raises(AuthenticationException):
        impostor.files.list("/")


def test_the_api_key_opens_any_sandbox(e2b_server: LocalServer, pair: tuple[Sandbox, Sandbox]) -> None:
    victim, _ = pair
    response = httpx.get(e2b_server.url + "/files", params={"path": "/etc/hostname"}, timeout=30,
                         headers=_headers(victim, ENVD, **{"X-API-Key": e2b_server.api_key}))
    assert response.status_code == 200
    response = httpx.get(e2b_server.url + "/contexts", timeout=30,
                         headers=_headers(victim, INTERPRETER, **{"X-API-Key": e2b_server.api_key}))
    assert response.status_code == 200 and isinstance(response.json(), list)


def test_health_needs_no_token(e2b_server: LocalServer, pair: tuple[Sandbox, Sandbox]) -> None:
    victim, _ = pair
    for port in (ENVD, INTERPRETER):
        response = httpx.get(e2b_server.url + "/health", headers=_headers(victim, port), timeout=30)
        assert response.is_success


def test_init_is_not_reachable_through_the_router(e2b_server: LocalServer, pair: tuple[Sandbox, Sandbox]) -> None:
    victim, _ = pair
    body = {"envVars": {"PLANTED": "by-outsider"}, "accessToken": "attacker-chosen"}
    credentials = {"X-Access-Token": victim._envd_access_token, "X-API-Key": e2b_server.api_key}
    for path in ("/init", "/init/", "/%69nit"):
        response = httpx.post(e2b_server.url + path, json=body, timeout=30,
                              headers=_headers(victim, ENVD, **credentials))
        assert response.status_code in (403, 404), (path, response.status_code)
    assert victim.commands.run("echo -n ${PLANTED:-unset}").stdout == "unset"
    assert victim.files.read("/etc/hostname")  # the owner's token still works


def test_sdk_sandboxes_keep_working_sync(e2b_server: LocalServer) -> None:
    sbx = Sandbox.create(envs={"LEVEL": "create"})
    try:
        assert sbx.traffic_access_token
        assert sbx.commands.run("echo -n $LEVEL").stdout == "create"
        sbx.files.write("/home/user/a.txt", "content")
        assert sbx.files.read("/home/user/a.txt") == "content"
        assert sbx.run_code("x = 40\nx + 2").text == "42"
        ctx = sbx.create_code_context(cwd="/tmp")
        assert ctx.id in {c.id for c in sbx.list_code_contexts()}
        assert sbx.run_code("import os\nos.getcwd()", context=ctx).text == "/tmp"
        sbx.restart_code_context(ctx)
        sbx.remove_code_context(ctx)
        assert ctx.id not in {c.id for c in sbx.list_code_contexts()}
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.traffic_access_token == sbx.traffic_access_token
        assert again.run_code("x").text == "40"
        assert again.files.read("/home/user/a.txt") == "content"
    finally:
        sbx.kill()


async def test_sdk_sandboxes_keep_working_async(e2b_server: LocalServer) -> None:
    sbx = await AsyncSandbox.create()
    try:
        assert sbx.traffic_access_token
        assert (await sbx.commands.run("echo -n hi")).stdout == "hi"
        await sbx.files.write("/home/user/b.txt", "async")
        assert await sbx.files.read("/home/user/b.txt") == "async"
        assert (await sbx.run_code("6 * 7")).text == "42"
        ctx = await sbx.create_code_context(language="python")
        assert ctx.id in {c.id for c in await sbx.list_code_contexts()}
        await sbx.restart_code_context(ctx.id)
        await sbx.remove_code_context(ctx.id)
    finally:
        await sbx.kill()


def test_signed_urls_with_and_without_expiry(e2b_server: LocalServer, pair: tuple[Sandbox, Sandbox]) -> None:
    victim, _ = pair
    headers = _headers(victim, ENVD)
    victim.files.write("/home/user/signed.txt", "signed")
    for expiry in (None, 120):
        url = victim.download_url("/home/user/signed.txt", use_signature_expiration=expiry)
        response = httpx.get(url, headers=headers, timeout=30)
        assert response.status_code == 200 and response.text == "signed"
        upload = victim.upload_url(f"/home/user/up-{expiry}.txt", use_signature_expiration=expiry)
        response = httpx.post(upload, headers=headers, files={"file": ("f", b"up")}, timeout=30)
        assert response.status_code == 200, response.text
        assert victim.files.read(f"/home/user/up-{expiry}.txt") == "up"
    expired = victim.download_url("/home/user/signed.txt", use_signature_expiration=-5)
    response = httpx.get(expired, headers=headers, timeout=30)
    assert response.status_code == 401 and "expired" in response.json()["message"]
    # A signature opens only /files: the same query on an RPC path is refused.
    query = urlsplit(victim.download_url("/home/user/signed.txt")).query
    response = httpx.post(f"{e2b_server.url}/filesystem.Filesystem/Stat?{query}", json={"path": "/"},
                          headers={**headers, "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 401


def test_tokens_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_LOCAL_POOL_SIZE", "0")
    home = tmp_path / "home"
    server = start_server(home)
    try:
        created = httpx.post(server.url + "/v2/sandboxes", json={"templateID": "base"}, timeout=120,
                             headers={"X-API-Key": server.api_key}).json()
        assert created["trafficAccessToken"]
        server.process.terminate()
        server.process.wait(timeout=60)
        server = start_server(home, int(urlsplit(server.url).port or 0))
        again = httpx.post(f"{server.url}/sandboxes/{created['sandboxID']}/connect", json={"timeout": 60},
                           timeout=60, headers={"X-API-Key": server.api_key}).json()
        assert again["trafficAccessToken"] == created["trafficAccessToken"]
        assert again["envdAccessToken"] == created["envdAccessToken"]
        headers = {"E2b-Sandbox-Id": created["sandboxID"], "E2b-Sandbox-Port": ENVD}
        response = httpx.get(server.url + "/files", params={"path": "/etc/hostname"}, timeout=30,
                             headers={**headers, "X-Access-Token": created["envdAccessToken"]})
        assert response.status_code == 200
        assert httpx.get(server.url + "/files", params={"path": "/etc/hostname"}, timeout=30,
                         headers=headers).status_code == 401
    finally:
        stop_server(server)


# -- secrets on disk ---------------------------------------------------------------------------------

def _read_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    script = ("import os, sys\n"
              f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
              "try:\n    open(sys.argv[1], 'rb').read()\nexcept OSError as exc:\n"
              "    print(exc.errno); sys.exit(3)\nprint('read'); sys.exit(0)\n")
    return subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=30)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every host user may enter (pytest's own temporary directories are private)."""
    path = Path(tempfile.mkdtemp(prefix="e2b-local-perm-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_data_directory_secrets_are_kept_from_other_users(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_LOCAL_POOL_SIZE", "0")
    # A data directory any user can enter, as an older version left it, with readable secrets.
    home = open_dir / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "api-key").write_text("e2b_" + "0" * 40 + "\n")
    os.chmod(home / "api-key", 0o644)
    server = start_server(home)
    try:
        httpx.post(server.url + "/v2/sandboxes", json={"templateID": "base"}, timeout=120,
                   headers={"X-API-Key": server.api_key}).raise_for_status()
        assert home.stat().st_mode & 0o777 == 0o700
        registry = home / "registry.sqlite3"
        secrets = [home / "api-key", registry] + [Path(f"{registry}{s}") for s in ("-wal", "-shm", "-journal")]
        present = [p for p in secrets if p.exists()]
        assert registry in present and home / "api-key" in present
        for path in present:
            assert path.stat().st_mode & 0o777 == 0o600, path
            result = _read_as_nobody(path)
            assert result.returncode == 3 and result.stdout.strip() == str(errno.EACCES), (path, result)
    finally:
        stop_server(server)


# -- bodies --------------------------------------------------------------------------------------------

def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _reset_rss_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _oversized_post(url: str, path: str, api_key: str, total: int, chunked: bool) -> tuple[int, bytes]:
    """POST `total` bytes to `path`, stopping as soon as the server answers; (status, body)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {api_key}\r\n"
                  f"Content-Type: application/json\r\n{framing}\r\n\r\n").encode())
    chunk = b"[" + b" " * (1024 * 1024 - 1)
    sent = 0
    answer = b""
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
            sock.sendall(data)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    deadline = time.monotonic() + 60
    try:
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        while b"}" not in body and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            body += data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_control_plane_bodies_are_refused(e2b_server: LocalServer, chunked: bool) -> None:
    pid = e2b_server.process.pid
    _reset_rss_peak(pid)
    baseline = _rss_peak_kib(pid)
    for path in ("/v2/sandboxes", "/sandboxes/nonexistent/timeout"):
        status, body = _oversized_post(e2b_server.url, path, e2b_server.api_key, 512 * 1024 * 1024, chunked)
        assert status == 413, (path, status, body[:200])
        assert "too large" in json.loads(body)["message"]
        growth = _rss_peak_kib(pid) - baseline
        assert growth < 64 * 1024, f"the server's RSS grew by {growth} KiB"
    assert httpx.get(e2b_server.url + "/v2/sandboxes", headers={"X-API-Key": e2b_server.api_key}).status_code == 200


def test_large_uploads_still_stream(e2b_server: LocalServer) -> None:
    sbx = BaseSandbox.create()
    try:
        size = 128 * 1024 * 1024
        pid = e2b_server.process.pid
        _reset_rss_peak(pid)
        baseline = _rss_peak_kib(pid)
        sbx.files.write("/home/user/big.bin", io.BytesIO(b"\x5a" * size))
        assert sbx.files.get_info("/home/user/big.bin").size == size
        assert _rss_peak_kib(pid) - baseline < 64 * 1024
    finally:
        sbx.kill()
