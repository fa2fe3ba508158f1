"""The gateway's configuration: E2B's `mcp` dictionary turned into MCP servers to start."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

# Where custom servers (`github/<owner>/<repo>`) are cloned; a template may clone them in advance.
CLONE_ROOT = "/opt/mcp-servers/github"
GITHUB_KEY = re.compile(r"^github/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)$")
# MCP tool names allow letters, digits, '_' and '-'; a prefix keeps only those.
NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Between a server's prefix and its tool's name, as Docker's MCP gateway (E2B's) writes it.
PREFIX_SEPARATOR = "__"


class ConfigError(Exception):
    """The configuration cannot be run; the message says why, naming the server."""


@dataclass(frozen=True)
class Package:
    """A catalogue server published as a package: `npm` (run with npx) or `pypi` (run with uvx).

    `command`: the program an installed copy provides (the template installs the npm ones).
    """

    registry: str
    name: str
    command: str


# The catalogue servers published as npm or PyPI packages, which run here as they are.
CATALOGUE: dict[str, Package] = {
    "filesystem": Package("npm", "@modelcontextprotocol/server-filesystem", "mcp-server-filesystem"),
    "memory": Package("npm", "@modelcontextprotocol/server-memory", "mcp-server-memory"),
    "sequentialthinking": Package("npm", "@modelcontextprotocol/server-sequential-thinking",
                                  "mcp-server-sequential-thinking"),
    "fetch": Package("pypi", "mcp-server-fetch", "mcp-server-fetch"),
    "git": Package("pypi", "mcp-server-git", "mcp-server-git"),
    "duckduckgo": Package("pypi", "duckduckgo-mcp-server", "duckduckgo-mcp-server"),
}


@dataclass
class ServerSpec:
    """One MCP server to start: how to fetch and install it, and the stdio command that runs it."""

    key: str
    prefix: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    clone_url: str | None = None
    install_cmd: str | None = None


def parse(text: str) -> list[ServerSpec]:
    """The servers of a `--config` JSON text, or ConfigError naming the first that cannot run here."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError('--config must be a JSON object of MCP servers, e.g. {"filesystem": {"paths": ["/tmp"]}}')
    specs = []
    for key, settings in config.items():
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ConfigError(f"MCP server '{key}': its settings must be an object")
        specs.append(_custom(key, settings) if key.startswith("github/") else _catalogue(key, settings))
    prefixes = [spec.prefix for spec in specs]
    for prefix in prefixes:
        if prefixes.count(prefix) > 1:
            raise ConfigError(f"two MCP servers would prefix their tools with '{prefix}'")
    return specs


def tool_name(prefix: str, tool: str) -> str:
    """The name a server's tool has on the gateway."""
    return f"{prefix}{PREFIX_SEPARATOR}{tool}"


def _prefix(name: str) -> str:
    return NAME_UNSAFE.sub("_", name)


def _custom(key: str, settings: dict[str, Any]) -> ServerSpec:
    match = GITHUB_KEY.match(key)
    if match is None:
        raise ConfigError(f"MCP server '{key}': a custom server's key is github/<owner>/<repo>")
    run_cmd = settings.get("run_cmd", settings.get("runCmd"))
    if not isinstance(run_cmd, str) or not run_cmd.strip():
        raise ConfigError(f"MCP server '{key}': run_cmd (the command that starts a stdio MCP server) is required")
    install_cmd = settings.get("install_cmd", settings.get("installCmd"))
    if install_cmd is not None and not isinstance(install_cmd, str):
        raise ConfigError(f"MCP server '{key}': install_cmd must be a string")
    envs = settings.get("envs") or {}
    if not isinstance(envs, dict) or not all(isinstance(v, str) for v in envs.values()):
        raise ConfigError(f"MCP server '{key}': envs must map names to strings")
    owner, repo = match["owner"], match["repo"]
    return ServerSpec(key=key, prefix=_prefix(repo), command=["/bin/sh", "-c", run_cmd], env=dict(envs),
                      cwd=f"{CLONE_ROOT}/{owner}/{repo}", clone_url=f"https://github.com/{owner}/{repo}.git",
                      install_cmd=install_cmd or None)


def _catalogue(key: str, settings: dict[str, Any]) -> ServerSpec:
    package = CATALOGUE.get(key)
    if package is None:
        runnable = ", ".join(sorted(CATALOGUE))
        raise ConfigError(
            f"MCP server '{key}' needs E2B cloud: e2b-local runs custom servers (github/<owner>/<repo>) and the "
            f"catalogue servers published as npm or PyPI packages ({runnable})")
    args: list[str] = []
    if key in ("filesystem", "git"):
        paths = settings.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"MCP server '{key}': paths (a list of directories) is required")
        args = list(paths) if key == "filesystem" else ["--repository", paths[0]]
    if shutil.which(package.command):
        launcher = [package.command]
    elif package.registry == "npm":
        launcher = ["npx", "-y", package.name]
    else:
        launcher = ["uvx", package.name]
    return ServerSpec(key=key, prefix=_prefix(key), command=[*launcher, *args])
