"""The MCP gateway: `Sandbox.create(mcp=...)` through the real SDK in domain mode, and the `mcp` client
against `get_mcp_url()` with `get_mcp_token()`, as E2B's users connect to it."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from e2b import CommandExitException, Sandbox, SandboxException, Template
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import LocalServer
from tests.local.test_domain import domain_server, tls  # noqa: F401 - fixtures

pytestmark = pytest.mark.sandbox

# The first gateway sandbox may build the template's layer (about a minute) inside create.
CREATE_TIMEOUT_S = 600
# A tiny stdio MCP server on the `mcp` library (which the template installs); it answers with its
# envs' GREETING and what the gateway's install_cmd left in its directory.
ECHO_SERVER = '''\
import os
from pathlib import Path
from mcp.server.mcpserver import MCPServer

server = MCPServer("echo")

@server.tool()
def shout(text: str) -> str:
    """The text in capitals, after the GREETING variable."""
    return " ".join([os.environ["GREETING"], text.upper(), Path("installed").read_text().strip()])

server.run()
'''
ECHO_REPO = "/opt/mcp-servers/github/e2b-local/echo-mcp"


@asynccontextmanager
async def mcp_session(url: str, token: str | None, context: ssl.SSLContext) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session over Streamable HTTP, sending the token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (httpx2.AsyncClient(headers=headers, verify=context, timeout=60) as client,
                streamable_http_client(url, http_client=client) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


def text_of(result: Any) -> str:
    return "".join(part.text for part in result.content if getattr(part, "text", None))


@pytest.fixture(scope="module")
def filesystem_sandbox(domain_server: LocalServer) -> Iterator[Sandbox]:  # noqa: F811
    """A gateway sandbox with the catalogue's filesystem server (published on npm)."""
    sbx = Sandbox.create(mcp={"filesystem": {"paths": ["/home/user"]}}, timeout=600, request_timeout=CREATE_TIMEOUT_S)
    try:
        yield sbx
    finally:
        sbx.kill()


async def test_npm_catalogue_server_listed_and_called(filesystem_sandbox: Sandbox, tls: ssl.SSLContext) -> None:  # noqa: F811
    sbx = filesystem_sandbox
    sbx.files.write("/home/user/hello.txt", "hello from the sandbox")
    url = sbx.get_mcp_url()
    assert url == f"https://{sbx.get_host(50005)}/mcp"
    async with mcp_session(url, sbx.get_mcp_token(), tls) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert {"filesystem__read_text_file", "filesystem__list_directory"} <= names
        result = await session.call_tool("filesystem__read_text_file", {"path": "/home/user/hello.txt"})
        assert not result.is_error
        assert "hello from the sandbox" in text_of(result)
        listing = await session.call_tool("filesystem__list_directory", {"path": "/home/user"})
        assert "hello.txt" in text_of(listing)


def test_token_required_and_stored_for_root(filesystem_sandbox: Sandbox, tls: ssl.SSLContext) -> None:  # noqa: F811
    sbx = filesystem_sandbox
    url, token = sbx.get_mcp_url(), sbx.get_mcp_token()
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": token}):
        response = httpx.post(url, json=ping, headers={**accept, **headers}, verify=tls, timeout=30)
        assert response.status_code == 401, headers
    # A new handle reads the token the gateway stored, as the SDK does after connect().
    assert Sandbox.connect(sbx.sandbox_id).get_mcp_token() == token
    listing = sbx.commands.run("stat -c '%a %U' /etc/mcp-gateway/.token", user="root").stdout.split()
    assert listing == ["600", "root"]
    with pytest.raises(CommandExitException) as denied:
        sbx.commands.run("cat /etc/mcp-gateway/.token", user="user")
    assert "Permission denied" in denied.value.stderr


async def test_refused_without_token_by_the_mcp_client(
        filesystem_sandbox: Sandbox, tls: ssl.SSLContext) -> None:  # noqa: F811
    with pytest.raises(BaseExceptionGroup) as failure:
        async with mcp_session(filesystem_sandbox.get_mcp_url(), None, tls):
            pass
    # The client reports the gateway's 401 to initialize as an MCP error.
    assert failure.group_contains(MCPError, match="error response", depth=2)


async def test_custom_server_from_a_repository(domain_server: LocalServer, tls: ssl.SSLContext) -> None:  # noqa: F811
    encoded = base64.b64encode(ECHO_SERVER.encode()).decode()
    template = Template().from_template("mcp-gateway").run_cmd(
        f"mkdir -p {ECHO_REPO} && cd {ECHO_REPO} && echo {encoded} | base64 -d > server.py"
        " && git init -q && git add . && git -c user.name=test -c user.email=test@example.com commit -qm init"
        " && pip install -q mcp==2.3.0", user="root")
    Template.build(template, "mcp-echo:v1", request_timeout=CREATE_TIMEOUT_S)
    sbx = Sandbox.create(template="mcp-echo:v1", timeout=600, request_timeout=CREATE_TIMEOUT_S, mcp={
        "github/e2b-local/echo-mcp": {"install_cmd": "echo by-install-cmd > installed",
                                      "run_cmd": "python3 server.py", "envs": {"GREETING": "hi"}},
    })
    try:
        async with mcp_session(sbx.get_mcp_url(), sbx.get_mcp_token(), tls) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert list(tools) == ["echo-mcp__shout"]
            assert "capitals" in (tools["echo-mcp__shout"].description or "")
            result = await session.call_tool("echo-mcp__shout", {"text": "quiet"})
            assert text_of(result) == "hi QUIET by-install-cmd"
    finally:
        sbx.kill()


def test_cloud_only_catalogue_server_named_in_the_error(domain_server: LocalServer) -> None:  # noqa: F811
    with pytest.raises(SandboxException) as failure:
        Sandbox.create(mcp={"exa": {"apiKey": "unused"}}, request_timeout=CREATE_TIMEOUT_S)
    message = str(failure.value)
    assert message.startswith("Failed to start MCP gateway:")
    assert "'exa'" in message and "needs E2B cloud" in message
