"""A git server for tests: git's smart HTTP protocol, `git http-backend` run as a CGI program per request.

    python git_http.py ADDRESS PORT ROOT

serves every repository under ROOT at http://ADDRESS:PORT/<name> for clone and fetch (shallow and
single-branch clones included); `/` answers 200, for a readiness probe. Run it on a namespaced test
host (see nethost.py): sandboxes cannot reach the host's own addresses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def split_cgi(output: bytes) -> tuple[bytes, bytes]:
    """A CGI program's output as (header lines, body); the headers end at the first empty line."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := output.find(sep)) >= 0]
    if not ends:
        return b"", output
    at, length = min(ends)
    return output[:at], output[at + length:]


class GitHandler(BaseHTTPRequestHandler):
    """Passes each request to `git http-backend` and its CGI answer back."""

    root = "."

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._answer(200, [], b"")
            return
        body = self._body()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": self.root,
               "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": url.path,
               "QUERY_STRING": url.query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0]}
        for header, variable in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, payload = split_cgi(result.stdout)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        if result.returncode != 0 and not head:
            status, payload = 500, result.stderr
        self._answer(status, headers, payload)

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    address, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    GitHandler.root = os.path.abspath(root)
    ThreadingHTTPServer((address, port), GitHandler).serve_forever()


if __name__ == "__main__":
    main()
