"""Domain mode: the unmodified SDK with only E2B_DOMAIN and the trust settings, and sandbox ports by host name."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import SandboxNotRunningException
from e2b_code_interpreter import Sandbox as CodeSandbox

from e2b_local.control.domain import ca
from local.sandbox_helpers import kill_during_a_long_cell
from tests.conftest import (
    LocalServer,
    _free_port,
    exported,
    fresh_sdk_transports,
    run_js,
    start_server,
    stop_server,
)

# How long a server started in a sandbox may take to listen.
LISTEN_DEADLINE = 30.0
# How long a stream of a killed sandbox may take to end (it ends at once; this only bounds a hang).
KILLED_STREAM_DEADLINE = 30.0
# Answers the request's Host header and path (at /headers: the header names it got), so that a test
# sees what reached the sandbox; a POST is answered the length of its body, sent with a length or in chunks.
ECHO_SERVER = """\
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"{self.headers['Host']} {self.path}".encode()
        if self.path == "/headers":
            body = json.dumps(sorted(k.lower() for k in self.headers.keys())).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size); self.rfile.readline()
            while self.rfile.readline() not in (b"\\r\\n", b""):
                pass
        else:
            data = self.rfile.read(int(self.headers["Content-Length"]))
        body = str(len(data)).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


@pytest.fixture(scope="module")
def domain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server in domain mode, with the environment holding only E2B_DOMAIN, the key and the trust file."""
    https_port = _free_port()
    server = start_server(tmp_path_factory.mktemp("e2b-domain-home"), env={"E2B_LOCAL_HTTPS_PORT": str(https_port)})
    domain_env = {"E2B_DOMAIN": f"e2b.localhost:{https_port}", "E2B_API_KEY": server.api_key,
                  "SSL_CERT_FILE": str(server.home / "tls" / "ca-bundle.pem"), "E2B_API_URL": None,
                  "E2B_SANDBOX_URL": None}
    try:
        with exported(domain_env):
            fresh_sdk_transports()
            yield server
    finally:
        stop_server(server)
        fresh_sdk_transports()


@pytest.fixture(scope="module")
def tls(domain_server: LocalServer) -> ssl.SSLContext:
    """A client context that trusts the server's authority only."""
    return ssl.create_default_context(cafile=str(domain_server.home / "tls" / "ca.pem"))


def wait_for(url: str, tls: ssl.SSLContext, **kwargs: object) -> httpx.Response:
    """GET `url` until something listens behind it (502 is the proxy's answer until then)."""
    deadline = time.monotonic() + LISTEN_DEADLINE
    while True:
        response = httpx.get(url, verify=tls, timeout=30, **kwargs)
        if response.status_code != 502 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def start_echo(sandbox: Sandbox, port: int) -> None:
    sandbox.files.write("/tmp/echo.py", ECHO_SERVER)
    sandbox.commands.run(f"python3 /tmp/echo.py {port}", background=True)


def test_the_sdk_works_with_only_the_domain(domain_server: LocalServer, tls: ssl.SSLContext) -> None:
    sandbox = CodeSandbox.create(timeout=120)
    try:
        assert sandbox.connection_config.api_url.startswith("https://api.e2b.localhost:")
        assert sandbox.commands.run("echo hi").stdout == "hi\n"
        sandbox.files.write("/home/user/a.txt", "hello")
        assert sandbox.files.read("/home/user/a.txt") == "hello"
        assert sandbox.run_code("6 * 7").text == "42"
        sandbox.commands.run("cd /tmp && python3 -m http.server 8000", background=True)
        url = "https://" + sandbox.get_host(8000)
        assert wait_for(url, tls).status_code == 200
        with httpx.Client(http2=True, verify=tls) as client:
            answer = client.get(url)
        assert answer.status_code == 200 and answer.http_version == "HTTP/2"
        sandbox.pause()
        resumed = CodeSandbox.connect(sandbox.sandbox_id)
        assert resumed.run_code("6 * 7").text == "42"
        assert resumed.files.read("/home/user/a.txt") == "hello"
    finally:
        sandbox.kill()


async def test_the_async_sdk_works_with_only_the_domain(domain_server: LocalServer) -> None:
    sandbox = await AsyncSandbox.create(timeout=120)
    try:
        assert (await sandbox.commands.run("echo hi")).stdout == "hi\n"
        await sandbox.files.write("/home/user/b.txt", "async")
        assert await sandbox.files.read("/home/user/b.txt") == "async"
        await sandbox.pause()
        resumed = await AsyncSandbox.connect(sandbox.sandbox_id)
        assert (await resumed.commands.run("cat /home/user/b.txt")).stdout == "async"
    finally:
        await sandbox.kill()


def test_closed_port_unknown_and_killed_sandboxes(domain_server: LocalServer, tls: ssl.SSLContext) -> None:
    sandbox = Sandbox.create(timeout=120)
    url = "https://" + sandbox.get_host(8123)
    closed = httpx.get(url, verify=tls)
    assert closed.status_code == 502
    assert closed.json() == {"code": 502, "sandboxId": sandbox.sandbox_id, "port": 8123,
                             "message": f"The sandbox {sandbox.sandbox_id} is running but there is no "
                                        "service running on port 8123"}
    page = httpx.get(url, verify=tls, headers={"Accept": "text/html"})
    assert page.status_code == 502 and "Closed Port Error" in page.text
    sandbox.kill()
    gone = httpx.get(url, verify=tls)
    assert gone.status_code == 502 and gone.json()["message"] == f"The sandbox {sandbox.sandbox_id} was not found"
    unknown = httpx.get(url.replace(sandbox.sandbox_id, "nosuchsandbox"), verify=tls)
    assert unknown.json()["message"] == "The sandbox nosuchsandbox was not found"


def test_a_background_commands_wait_ends_when_its_sandbox_is_killed(domain_server: LocalServer) -> None:
    # The SDK streams the command over HTTP/2 here: the stream must be reset when the sandbox goes, or
    # wait() (and a Node process waiting on it) never returns.
    sandbox = Sandbox.create(timeout=120)
    handle = sandbox.commands.run("sleep 1000", background=True)
    sandbox.kill()
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            handle.wait()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(KILLED_STREAM_DEADLINE)
    assert not waiter.is_alive(), f"wait() still waits {KILLED_STREAM_DEADLINE} s after the kill"
    assert isinstance(outcome[0], SandboxNotRunningException), outcome
    assert "killed or reached its end of life" in str(outcome[0])


def test_a_run_code_in_flight_ends_when_its_sandbox_is_killed(domain_server: LocalServer) -> None:
    # The code interpreter's requests go over HTTP/1.1 (the SDK's own choice for /execute): the
    # connection is reset, and the SDK finds the sandbox gone.
    kill_during_a_long_cell(CodeSandbox.create(timeout=120))


def test_ports_large_uploads_and_streams(domain_server: LocalServer, tls: ssl.SSLContext) -> None:
    sandbox = Sandbox.create(timeout=120)
    try:
        start_echo(sandbox, 8080)
        url = "https://" + sandbox.get_host(8080)
        seen = wait_for(url + "/a?b=1", tls)
        assert seen.text == f"{sandbox.get_host(8080)} /a?b=1"
        payload = os.urandom(24 * 1024 * 1024)
        assert httpx.post(url, content=payload, verify=tls, timeout=120).text == str(len(payload))
        with httpx.Client(http2=True, verify=tls, timeout=120) as client:
            assert client.post(url, content=payload).text == str(len(payload))
        # A long stream: a server-sent-events style response that arrives piece by piece.
        sandbox.files.write("/tmp/sse.py", (
            "import http.server, time\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.send_header('Content-Type', 'text/event-stream')\n"
            "        self.end_headers()\n"
            "        for i in range(5):\n"
            "            self.wfile.write(f'data: {i}\\n\\n'.encode()); self.wfile.flush(); time.sleep(0.2)\n"
            "http.server.HTTPServer(('127.0.0.1', 8090), H).serve_forever()\n"))
        sandbox.commands.run("python3 /tmp/sse.py", background=True)
        wait_for("https://" + sandbox.get_host(8090), tls)
        with httpx.stream("GET", "https://" + sandbox.get_host(8090), verify=tls, timeout=30) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data:")]
        assert events == [f"data: {i}" for i in range(5)]
    finally:
        sandbox.kill()


def test_websocket_echo_through_the_sandbox_url(domain_server: LocalServer, tls: ssl.SSLContext) -> None:
    import websockets
    from websockets.sync.client import connect

    sandbox = Sandbox.create(timeout=120)
    try:
        # The websockets package, copied in: the sandbox needs no internet for it.
        package = Path(websockets.__file__).parent
        sandbox.files.write_files([
            {"path": f"/home/user/lib/websockets/{p.relative_to(package)}", "data": p.read_bytes()}
            for p in package.rglob("*.py")])
        sandbox.files.write("/tmp/ws.py", (
            "import asyncio\nfrom websockets.asyncio.server import serve\n"
            "async def echo(ws):\n    async for m in ws:\n        await ws.send(m)\n"
            "async def main():\n    async with serve(echo, '0.0.0.0', 8765):\n        await asyncio.Future()\n"
            "asyncio.run(main())\n"))
        sandbox.commands.run("PYTHONPATH=/home/user/lib python3 /tmp/ws.py", background=True)
        host = sandbox.get_host(8765)
        assert wait_for(f"https://{host}", tls).status_code != 502
        with connect(f"wss://{host}/", ssl=tls, open_timeout=60) as ws:
            ws.send("hello")
            assert ws.recv(timeout=30) == "hello"
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=30) == b"\x00\x01"
    finally:
        sandbox.kill()


def test_a_paused_sandbox_with_auto_resume_wakes_on_a_request(domain_server: LocalServer,
                                                               tls: ssl.SSLContext) -> None:
    sandbox = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        start_echo(sandbox, 8080)
        url = "https://" + sandbox.get_host(8080)
        assert wait_for(url, tls).status_code == 200
        sandbox.pause()
        assert sandbox.get_info().state.value == "paused"
        assert httpx.get(url + "/again", verify=tls, timeout=60).text.endswith(" /again")
        assert sandbox.get_info().state.value == "running"
    finally:
        sandbox.kill()


def test_traffic_token_and_masked_host(domain_server: LocalServer, tls: ssl.SSLContext) -> None:
    sandbox = Sandbox.create(timeout=120, network={"allow_public_traffic": False,
                                                   "mask_request_host": "localhost:${PORT}"})
    try:
        token = sandbox.traffic_access_token
        assert token
        start_echo(sandbox, 8080)
        url = "https://" + sandbox.get_host(8080)
        answer = wait_for(url + "/x", tls, headers={"e2b-traffic-access-token": token})
        assert answer.status_code == 200 and answer.text == "localhost:8080 /x"
        refused = httpx.get(url, verify=tls)
        assert refused.status_code == 403 and "e2b-traffic-access-token" in refused.json()["message"]
        assert httpx.get(url, verify=tls, headers={"e2b-traffic-access-token": "wrong"}).status_code == 403
    finally:
        sandbox.kill()


def test_one_connection_keeps_every_check(domain_server: LocalServer, tls: ssl.SSLContext) -> None:
    sandbox = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True},
                             network={"allow_public_traffic": False, "mask_request_host": "localhost:${PORT}"})
    try:
        token = {"e2b-traffic-access-token": sandbox.traffic_access_token}
        start_echo(sandbox, 8080)
        host = sandbox.get_host(8080)
        url = "https://" + host
        assert wait_for(url + "/x", tls, headers=token).text == "localhost:8080 /x"
        with httpx.Client(verify=tls, timeout=60) as client:  # HTTP/1.1, one keep-alive connection
            for i in range(20):
                assert client.get(f"{url}/{i}", headers=token).text == f"localhost:8080 /{i}"
            # Each request is checked, not only a connection's first one.
            assert client.get(url + "/x").status_code == 403
            seen = client.get(url + "/headers", headers={**token, "X-API-Key": domain_server.api_key,
                                                         "X-Access-Token": "secret", "X-Other": "1"}).json()
            assert "x-other" in seen
            assert not {"e2b-traffic-access-token", "x-api-key", "x-access-token"} & set(seen)

            def chunks():
                yield b"a" * 70_000
                yield b"b" * 5

            assert client.post(url, content=chunks(), headers=token).text == "70005"
            assert client.post(url, content=b"c" * 300_000, headers=token).text == "300000"
            sandbox.pause()
            # The connection into the sandbox went with the pause: the next request resumes it and opens another.
            assert client.get(url + "/again", headers=token).text == "localhost:8080 /again"
        # Pipelined requests are answered in order; a request for another host on the connection is refused.
        port = int(host.rsplit(":", 1)[1])
        extra = f"e2b-traffic-access-token: {sandbox.traffic_access_token}\r\n"
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                tls.wrap_socket(raw, server_hostname=host.split(":")[0]) as conn:
            conn.sendall(f"GET /p1 HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
                         f"GET /p2 HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
                         f"GET /p3 HTTP/1.1\r\nHost: api.e2b.localhost:{port}\r\n\r\n".encode())
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        answers = received.decode().split("HTTP/1.1 ")[1:]
        assert [a.split("\r\n", 1)[0] for a in answers] == ["200 OK", "200 OK", "421 Misdirected Request"]
        assert answers[0].endswith("localhost:8080 /p1") and answers[1].endswith("localhost:8080 /p2")
    finally:
        sandbox.kill()


@pytest.mark.parametrize("mode", ["domain", "url"])
def test_signed_urls(domain_server: LocalServer, tls: ssl.SSLContext, mode: str) -> None:
    options = {} if mode == "domain" else {"api_url": domain_server.url, "sandbox_url": domain_server.url}
    sandbox = Sandbox.create(timeout=120, **options)
    try:
        sandbox.files.write("/home/user/signed.txt", "signed content")
        plain = sandbox.download_url("/home/user/signed.txt")
        assert plain.startswith("https://" if mode == "domain" else "http://")
        assert httpx.get(plain, verify=tls).text == "signed content"
        upload = sandbox.upload_url("/home/user/up.txt", use_signature_expiration=60)
        assert httpx.post(upload, files={"file": ("up.txt", b"uploaded")}, verify=tls).status_code == 200
        assert sandbox.files.read("/home/user/up.txt") == "uploaded"
        expiring = sandbox.download_url("/home/user/signed.txt", use_signature_expiration=1)
        deadline = int(expiring.rsplit("signature_expiration=", 1)[1].split("&")[0])
        while time.time() <= deadline + 1:
            time.sleep(0.2)
        expired = httpx.get(expiring, verify=tls)
        assert expired.status_code == 401 and expired.json()["message"] == "signature is already expired"
        tampered = httpx.get(plain.replace("signed.txt", "other.txt"), verify=tls)
        assert tampered.status_code == 401
    finally:
        sandbox.kill()


JS_DOMAIN_SMOKE = """
const { Sandbox } = require('@e2b/code-interpreter');
(async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120000 });
  try {
    const echo = await sbx.commands.run('echo hi');
    await sbx.files.write('/home/user/js.txt', 'from node');
    const read = await sbx.files.read('/home/user/js.txt');
    const run = await sbx.runCode('6 * 7');
    await sbx.files.write('/tmp/page/index.html', 'served to node');
    // Detached by the shell: no command stream stays open to keep node running.
    await sbx.commands.run('cd /tmp/page && (setsid python3 -m http.server 8000 >/dev/null 2>&1 &)');
    const url = 'https://' + sbx.getHost(8000) + '/index.html';
    let answer;
    for (let i = 0; i < 150; i++) {
      answer = await fetch(url);
      if (answer.status !== 502) break;
      await new Promise(resolve => setTimeout(resolve, 200));
    }
    console.log(JSON.stringify({ apiUrl: sbx.connectionConfig.apiUrl, stdout: echo.stdout, read, text: run.text,
                                 host: sbx.getHost(8000), status: answer.status, body: await answer.text(),
                                 id: sbx.sandboxId }));
  } finally {
    await sbx.kill();
  }
})().catch(e => { console.error(e); process.exit(1); });
"""


JS_KILLED_STREAM = """
const { Sandbox } = require('e2b');
(async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120000 });
  const handle = await sbx.commands.run('sleep 1000', { background: true });
  await sbx.kill();
  let error = null;
  try { await handle.wait(); } catch (e) { error = String(e); }
  console.log(JSON.stringify({ error }));
})().catch(e => { console.error(e); process.exit(1); });
"""


def test_node_ends_after_killing_a_sandbox_with_a_background_command(domain_server: LocalServer) -> None:
    # Node exits only once nothing is pending: an HTTP/2 stream left open kept it waiting for good.
    env = {"E2B_DOMAIN": os.environ["E2B_DOMAIN"], "E2B_API_KEY": domain_server.api_key,
           "NODE_EXTRA_CA_CERTS": str(domain_server.home / "tls" / "ca.pem")}
    out = run_js(JS_KILLED_STREAM, env, timeout=KILLED_STREAM_DEADLINE * 2)
    assert isinstance(out, dict) and "killed or reached its end of life" in str(out["error"]), out


def test_the_js_sdk_works_with_only_the_domain(domain_server: LocalServer) -> None:
    https_port = os.environ["E2B_DOMAIN"].rsplit(":", 1)[1]
    env = {"E2B_DOMAIN": os.environ["E2B_DOMAIN"], "E2B_API_KEY": domain_server.api_key,
           "NODE_EXTRA_CA_CERTS": str(domain_server.home / "tls" / "ca.pem")}
    out = run_js(JS_DOMAIN_SMOKE, env)
    assert isinstance(out, dict)
    assert out["apiUrl"] == f"https://api.e2b.localhost:{https_port}"
    assert (out["stdout"], out["read"], out["text"]) == ("hi\n", "from node", "42")
    assert out["host"] == f"8000-{out['id']}.e2b.localhost:{https_port}"
    assert (out["status"], out["body"]) == (200, "served to node")
    listed = httpx.get(domain_server.url + "/v2/sandboxes", headers={"X-API-Key": domain_server.api_key}).json()
    assert out["id"] not in [s["sandboxID"] for s in listed]  # killed


# A page that needs two more requests to the same sandbox: a script that fills it in, and an image.
BROWSER_PAGE = """<!doctype html>
<html><head><title>from the sandbox</title><script src="/app.js" defer></script></head>
<body><p id="out">not run</p><img id="dot" src="/dot.svg" alt="dot"></body></html>
"""
BROWSER_SCRIPT = """document.getElementById("out").textContent = "script ran on " + location.host;"""
BROWSER_IMAGE = """<svg xmlns="http://www.w3.org/2000/svg" width="7" height="5"><rect width="7" height="5"/></svg>"""


def nss_trusting(home: Path, ca: Path) -> Path:
    """A home directory whose NSS database (what Chromium trusts on Linux) trusts the authority `ca`."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-N", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-A", "-t", "C,,", "-n", "e2b-local", "-i", str(ca)],
                   check=True, capture_output=True)
    return home


def test_chromium_loads_a_sandbox_page_over_https(domain_server: LocalServer, tls: ssl.SSLContext,
                                                   tmp_path: Path) -> None:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium) or shutil.which("certutil") is None:
        pytest.skip("needs Debian's chromium and certutil (apt install chromium libnss3-tools)")
    trusting = nss_trusting(tmp_path / "trusting", domain_server.home / "tls" / "ca.pem")
    untrusting = tmp_path / "untrusting"
    untrusting.mkdir()
    sandbox = Sandbox.create(timeout=120)
    try:
        sandbox.files.write_files([{"path": "/tmp/site/index.html", "data": BROWSER_PAGE},
                                   {"path": "/tmp/site/app.js", "data": BROWSER_SCRIPT},
                                   {"path": "/tmp/site/dot.svg", "data": BROWSER_IMAGE}])
        sandbox.commands.run("cd /tmp/site && python3 -m http.server 8000", background=True, timeout=0)
        host = sandbox.get_host(8000)
        assert wait_for(f"https://{host}/", tls).status_code == 200
        with playwright_sync.sync_playwright() as p:
            def launch(home: Path, *args: str):
                # As root Chromium's own sandbox cannot start; the pages are ours, served from loopback.
                return p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", *args],
                                         env={**os.environ, "HOME": str(home)})

            # HTTP/2 as the browser picks it, and HTTP/1.1 (served by another path of the listener).
            for args, protocol in (((), "h2"), (("--disable-http2",), "http/1.1")):
                browser = launch(trusting, *args)
                try:
                    page = browser.new_page()
                    seen: list[str] = []
                    page.on("requestfinished", lambda request, seen=seen: seen.append(request.url))
                    answer = page.goto(f"https://{host}/")
                    assert answer is not None and answer.status == 200
                    details = answer.security_details()
                    assert details is not None and details.get("issuer", "").startswith(ca.AUTHORITY_NAME)
                    playwright_sync.expect(page.locator("#out")).to_have_text(f"script ran on {host}")
                    page.wait_for_function("document.getElementById('dot').complete")
                    assert page.evaluate("document.getElementById('dot').naturalWidth") == 7
                    assert page.title() == "from the sandbox"
                    assert {f"https://{host}/app.js", f"https://{host}/dot.svg"} <= set(seen)
                    used = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
                    assert used == protocol
                finally:
                    browser.close()
            # Without the authority in the browser's trust the same page is refused: the chain is what counts.
            browser = launch(untrusting)
            try:
                with pytest.raises(playwright_sync.Error, match="ERR_CERT_AUTHORITY_INVALID"):
                    browser.new_page().goto(f"https://{host}/")
            finally:
                browser.close()
    finally:
        sandbox.kill()
