"""The MCP gateway's reading of E2B's `mcp` configuration (what `mcp-gateway --config` receives)."""

from __future__ import annotations

import json

import pytest

from e2b_local.mcp_gateway.config import CLONE_ROOT, ConfigError, parse, tool_name


def test_custom_server_from_a_repository() -> None:
    [spec] = parse(json.dumps({"github/acme/weather-mcp": {
        "install_cmd": "pip install -e .", "run_cmd": "python -m weather", "envs": {"LOG_LEVEL": "info"}}}))
    assert spec.clone_url == "https://github.com/acme/weather-mcp.git"
    assert spec.cwd == f"{CLONE_ROOT}/acme/weather-mcp"
    assert spec.install_cmd == "pip install -e ."
    assert spec.command == ["/bin/sh", "-c", "python -m weather"]
    assert spec.env == {"LOG_LEVEL": "info"}
    assert tool_name(spec.prefix, "forecast") == "weather-mcp__forecast"


def test_catalogue_servers_published_as_packages() -> None:
    specs = parse(json.dumps({"filesystem": {"paths": ["/home/user", "/tmp"]}, "git": {"paths": ["/repo"]},
                              "memory": {}}))
    filesystem, git, memory = specs
    assert filesystem.command[-2:] == ["/home/user", "/tmp"]
    assert git.command[-2:] == ["--repository", "/repo"]
    assert memory.command[-1].endswith("server-memory") or memory.command == ["mcp-server-memory"]
    assert [s.prefix for s in specs] == ["filesystem", "git", "memory"]


@pytest.mark.parametrize(("config", "needle"), [
    ({"exa": {"apiKey": "k"}}, "MCP server 'exa' needs E2B cloud"),
    ({"github/acme/x": {}}, "run_cmd"),
    ({"github/acme": {"run_cmd": "x"}}, "github/<owner>/<repo>"),
    ({"filesystem": {}}, "paths"),
    ({"github/a/tools": {"run_cmd": "x"}, "github/b/tools": {"run_cmd": "y"}}, "'tools'"),
    ([], "JSON object"),
])
def test_what_cannot_run_is_named(config: object, needle: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse(json.dumps(config))
    assert needle in str(failure.value)
