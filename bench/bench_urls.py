"""Benchmark: an HTTP round trip to a sandbox port through its URL, against the same request from inside.

The path measured is `https://<port>-<id>.<domain>` (TLS, the host server's relay into the sandbox's
network namespace) and the same over the plain-HTTP port, with a keep-alive client, to a small answer
of a server in the sandbox. The floor is the same request made inside the sandbox to 127.0.0.1 with a
keep-alive client of the same kind (http.client on both sides). Both are measured in one run,
alternating rounds. Prints JSON.

examples:
  python bench/bench_urls.py                  # 5 rounds of 200 round trips
  python bench/bench_urls.py --rounds 5 --repeat 500
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_server import local_server
from stats import measure, summary

# Target from the issue: a round trip through the URL within 3x of the same one inside the sandbox.
TARGET_RATIO = 3.0
PORT = 8080
SERVER = """\
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", PORT), H).serve_forever()
""".replace("PORT", str(PORT))
# Runs inside the sandbox: the floor, with the same client as the host side.
INSIDE = """\
import http.client, json, sys, time
repeat, warmup = int(sys.argv[1]), 5
conn = http.client.HTTPConnection("127.0.0.1", PORT)
samples = []
for i in range(warmup + repeat):
    t = time.perf_counter()
    conn.request("GET", "/"); r = conn.getresponse(); r.read()
    if i >= warmup:
        samples.append((time.perf_counter() - t) * 1000)
print(json.dumps(samples))
""".replace("PORT", str(PORT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(host: str, port: int, context: ssl.SSLContext | None) -> tuple[http.client.HTTPConnection, dict]:
    """A keep-alive connection to the sandbox port named by `host`, over TLS (by name) or plain HTTP."""
    if context is not None:
        return http.client.HTTPSConnection(host.split(":")[0], port, context=context), {}
    return http.client.HTTPConnection("127.0.0.1", port), {"Host": host}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    from e2b import Sandbox

    https_port = _free_port()
    home = Path(tempfile.mkdtemp(prefix="e2b-bench-urls-"))
    with local_server(home=home, extra_env={"E2B_LOCAL_HTTPS_PORT": str(https_port)}, remove=True) as sdk:
        sandbox = Sandbox.create(timeout=600, **sdk)
        clients: dict[str, tuple[http.client.HTTPConnection, dict]] = {}
        try:
            sandbox.files.write("/tmp/server.py", SERVER)
            sandbox.files.write("/tmp/inside.py", INSIDE)
            # No command timeout: the server must outlive the rounds (the default ends it after 60 s).
            sandbox.commands.run("python3 /tmp/server.py", background=True, timeout=0)
            host = sandbox.get_host(PORT)
            context = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
            plain_port = int(sdk["api_url"].rsplit(":", 1)[1])
            clients.update(https_url=_client(host, https_port, context), http_url=_client(host, plain_port, None))
            deadline = time.monotonic() + 30
            while True:
                conn, headers = clients["https_url"]
                conn.request("GET", "/", headers=headers)
                answer = conn.getresponse()
                answer.read()
                if answer.status == 200:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server in the sandbox did not answer: {answer.status}")
                time.sleep(0.2)
            samples: dict[str, list[float]] = {"https_url": [], "http_url": [], "inside": []}
            for _ in range(args.rounds):
                for name, (conn, headers) in clients.items():
                    def once(conn=conn, headers=headers) -> None:
                        conn.request("GET", "/", headers=headers)
                        response = conn.getresponse()
                        response.read()
                        assert response.status == 200
                    samples[name] += measure(once, args.repeat, warmup=5)
                inside = sandbox.commands.run(f"python3 /tmp/inside.py {args.repeat}")
                samples["inside"] += json.loads(inside.stdout)
        finally:
            for conn, _ in clients.values():
                conn.close()
            sandbox.kill()
    out = {name: summary(values) for name, values in samples.items()}
    floor = out["inside"]["p50_ms"]
    for name in ("https_url", "http_url"):
        out[name]["ratio"] = round(out[name]["p50_ms"] / floor, 2) if floor else None
    out["target_ratio"] = TARGET_RATIO
    out["meets_target"] = out["https_url"]["ratio"] is not None and out["https_url"]["ratio"] <= TARGET_RATIO
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
