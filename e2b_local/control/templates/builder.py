"""Template builds: the queue, the step runner and the readiness check.

Every step that touches files runs in a sandbox of its own, booted on the layers below it with the
same isolation as any sandbox (namespaces, cgroups, seccomp, the sandbox network path for pip and
apt), as the step's user with its environment and working directory. When the step ends, the
sandbox is stopped and the upper directory it left becomes the step's layer. Steps whose cache key
has a layer already are not run again (see layers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

import e2b_local.control.templates.agent_rpc as agent_rpc
from e2b_local.control.fleet.records import agent_client
from e2b_local.control.fleet.sandboxes import Fleet
from e2b_local.control.registry import DEFAULT_USER, DEFAULT_WORKDIR
from e2b_local.control.templates.layers import LayerStore, cache_key
from e2b_local.control.templates.records import BUILDING, ERROR, READY, WAITING, BuildRecord
from e2b_local.isolation.container import copy_tree

log = logging.getLogger("e2b_local")

READY_INTERVAL = 0.5
# Lines of a failing command's output carried in the build's failure reason.
TAIL_LINES = 20
# Images that name our own root filesystems (E2B's base images).
BUILTIN_IMAGES = {"e2bdev/base": "base", "e2bdev/code-interpreter": "code-interpreter-v1"}
# A COPY step, run as root in the build sandbox: unpack the uploaded archive in a scratch directory,
# give it its owner and mode, and copy what `src` matches to `dest` as Docker's COPY does.
COPY_SCRIPT = r"""
set -euo pipefail
src=$1 dest=$2 owner=$3 mode=$4 archive=$5
stage=$(mktemp -d /tmp/.e2b-copy-XXXXXX)
trap 'rm -rf "$stage" "$archive"' EXIT
tar -xf "$archive" -C "$stage" --no-same-owner --no-same-permissions --delay-directory-restore 2>/dev/null \
  || tar -xf "$archive" -C "$stage" --no-same-owner
chown -hR "$owner" "$stage"
if [ -n "$mode" ]; then find "$stage" -mindepth 1 ! -type l -exec chmod "$mode" {} +; fi
cd "$stage"
shopt -s nullglob dotglob
IFS=
matches=( $src )
if [ ${#matches[@]} -eq 0 ]; then echo "COPY: no files match '$src'" >&2; exit 1; fi
created=
if [ ! -e "$dest" ] && { [ ${#matches[@]} -gt 1 ] || [ -d "${matches[0]}" ] || [[ "$dest" == */ ]]; }; then
  mkdir -p "$dest"; created=$dest
fi
for m in "${matches[@]}"; do
  if [ -d "$m" ] && [ ! -L "$m" ]; then
    mkdir -p "$dest"; cp -a "$m/." "$dest/"
  elif [ -d "$dest" ]; then
    cp -a "$m" "$dest/"
  else
    mkdir -p "$(dirname "$dest")"; cp -a "$m" "$dest"
  fi
done
if [ -n "$created" ]; then chown "$owner" "$created"; fi
"""


class StepFailed(Exception):
    """A build step failed; `step` is E2B's name for it ("base", "1".., "finalize")."""

    def __init__(self, step: str, message: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.tail = tail or []


@dataclass
class Base:
    """What a build starts from: a cache key, the layers under its steps, and the state they left."""

    key: str
    layers: list[str]
    base_template: str
    env: dict[str, str] = field(default_factory=dict)
    user: str = DEFAULT_USER
    workdir: str = DEFAULT_WORKDIR


@dataclass
class State:
    """What the steps so far leave for the next one."""

    key: str
    layers: list[str]  # layer ids, topmost first
    env: dict[str, str]
    user: str
    workdir: str
    rebuilt: bool = False


def describe(step: dict[str, Any]) -> str:
    """A step as a Dockerfile line, for the build log."""
    args = list(step.get("args") or [])
    kind = str(step.get("type", "")).upper()
    if kind == "ENV":
        return "ENV " + " ".join(f"{args[i]}={args[i + 1]}" for i in range(0, len(args) - 1, 2))
    if kind == "RUN" and len(args) > 1 and args[1]:
        return f"RUN (user {args[1]}) {args[0]}"
    if kind == "COPY":
        return f"COPY {args[0]} {args[1]}" if len(args) > 1 else "COPY"
    return f"{kind} {' '.join(args)}".strip()


class BuildHost(Protocol):
    """What the builder needs of the template service: records, logs, uploads, layers and bases."""

    fleet: Fleet
    store: LayerStore

    def log(self, build: BuildRecord, level: str, message: str, step: str | None = None) -> None: ...

    def update_build(self, build: BuildRecord, **changes: Any) -> None: ...

    def fail(self, build: BuildRecord, message: str, step: str | None, tail: list[str]) -> None: ...

    def finish(self, build: BuildRecord) -> None: ...

    async def resolve_base(self, build: BuildRecord) -> Base: ...

    def upload_path(self, files_hash: str) -> Path: ...

    def layer_paths(self, base_template: str, layers: list[str]) -> list[Path]: ...


class Builder:
    """Runs builds, one task per build, at most `concurrency` at a time.

    `ready_timeout` is how long a template's ready check may take to pass, at build time and when a
    sandbox of it starts.
    """

    def __init__(self, service: BuildHost, concurrency: int, ready_timeout: float) -> None:
        self.service = service
        self.store: LayerStore = service.store
        self.slots = asyncio.Semaphore(concurrency)
        self.ready_timeout = ready_timeout
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def submit(self, build: BuildRecord) -> None:
        task = asyncio.create_task(self._run(build))
        self.tasks[build.build_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(build.build_id, None))

    async def _run(self, build: BuildRecord) -> None:
        service = self.service
        try:
            async with self.slots:
                service.update_build(build, status=BUILDING)
                service.log(build, "info", "Building template", step="base")
                await self._build(build)
        except StepFailed as exc:
            for line in exc.tail:
                service.log(build, "error", line, step=exc.step)
            service.log(build, "error", exc.message, step=exc.step)
            service.fail(build, exc.message, exc.step, exc.tail)
        except asyncio.CancelledError:
            service.fail(build, "the build was cancelled: the server is shutting down", None, [])
            raise
        except Exception as exc:
            log.exception("build %s failed", build.build_id)
            service.log(build, "error", f"internal error: {exc}")
            service.fail(build, f"internal error: {exc}", None, [])

    # -- the steps ---------------------------------------------------------------------------------
    async def _build(self, build: BuildRecord) -> None:
        service = self.service
        recipe = build.recipe
        base = await service.resolve_base(build)
        steps: list[dict[str, Any]] = list(recipe.get("steps") or [])
        state = State(base.key, list(base.layers), dict(base.env), base.user, base.workdir,
                      rebuilt=bool(recipe.get("force")))
        build.base_template = base.base_template
        service.update_build(build, base_template=base.base_template, layers=list(state.layers))
        total = len(steps)
        for index, step in enumerate(steps, 1):
            name = str(index)
            kind = str(step.get("type", "")).upper()
            identity = {"type": kind, "args": list(step.get("args") or []), "filesHash": step.get("filesHash")}
            if kind == "USER":
                identity["args"] = identity["args"][:1]
            key = cache_key(state.key, identity)
            label = f"[builder {index}/{total}] {describe(step)}"
            forced = state.rebuilt or bool(step.get("force"))
            if kind in ("ENV", "USER"):
                self._apply_metadata(kind, identity["args"], state)
                service.log(build, "info", label, step=name)
                state.key = key
                continue
            cached = None if forced else self.store.lookup(key)
            if cached is not None:
                service.log(build, "info", "CACHED " + label, step=name)
            else:
                service.log(build, "info", label, step=name)
                cached = await self._run_step(build, name, kind, identity, state)
                self.store.remember(key, cached)
                state.rebuilt = True
            if cached:
                state.layers.insert(0, cached)
            if kind == "WORKDIR":
                state.workdir = self._absolute(identity["args"][0], state.workdir)
            state.key = key
            service.update_build(build, layers=list(state.layers))
        start_cmd = recipe.get("startCmd") or None
        ready_cmd = recipe.get("readyCmd") or None
        service.update_build(build, cache_key=state.key, env=state.env, user=state.user, workdir=state.workdir,
                             start_cmd=start_cmd, ready_cmd=ready_cmd)
        if start_cmd or ready_cmd:
            service.log(build, "info", "Running the start command and waiting for the ready check",
                        step="finalize")
            await self._in_sandbox(build, state, lambda client: self.check_ready(
                client, build, start_cmd, ready_cmd, state.user, state.env, state.workdir, "finalize"), capture=False)
        service.finish(build)

    async def provision(self, build: BuildRecord, base: Base, script: str, workdir: str | None) -> Base:
        """Run `script` as root over `base` (cached like a step); the base with its layer on top."""
        key = cache_key(base.key, {"type": "PROVISION", "args": [script]})
        layer = self.store.lookup(key)
        if layer is None:
            state = State(base.key, list(base.layers), dict(base.env), "root", "/")
            build.base_template = base.base_template
            layer = await self._in_sandbox(build, state, lambda client: self._command(
                client, build, "base", ["/bin/sh", "-c", script], "root", base.env, "/", shown="provisioning"))
            self.store.remember(key, layer)
        return Base(key=key, layers=([layer] if layer else []) + base.layers, base_template=base.base_template,
                    env=base.env, user=DEFAULT_USER, workdir=workdir or DEFAULT_WORKDIR)

    @staticmethod
    def _absolute(path: str, workdir: str) -> str:
        return os.path.normpath(path if path.startswith("/") else os.path.join(workdir, path))

    @staticmethod
    def _apply_metadata(kind: str, args: list[str], state: State) -> None:
        if kind == "ENV":
            for i in range(0, len(args) - 1, 2):
                state.env[args[i]] = args[i + 1]
        elif args:
            state.user = args[0]
            # E2B's images give each user a home; a step's default directory follows the user.
            if state.workdir in ("/root", DEFAULT_WORKDIR):
                state.workdir = "/root" if args[0] == "root" else f"/home/{args[0]}"

    async def _run_step(self, build: BuildRecord, name: str, kind: str, identity: dict[str, Any],
                        state: State) -> str:
        args: list[str] = identity["args"]
        if kind == "RUN":
            user = args[1] if len(args) > 1 and args[1] else state.user
            return await self._in_sandbox(build, state, lambda client: self._command(
                client, build, name, ["/bin/bash", "-c", args[0]], user, state.env, state.workdir, shown=args[0]))
        if kind == "WORKDIR":
            path = self._absolute(args[0], state.workdir)
            # Created for the current user when missing, so that its steps may write there.
            script = '[ -d "$1" ] || { mkdir -p -- "$1" && chown -- "$2:" "$1"; }'
            return await self._in_sandbox(build, state, lambda client: self._command(
                client, build, name, ["/bin/bash", "-c", script, "workdir", path, state.user], "root", state.env,
                "/", shown=f"WORKDIR {path}"))
        if kind == "COPY":
            return await self._in_sandbox(build, state, lambda client: self._copy(client, build, name, args,
                                                                                  identity, state))
        raise StepFailed(name, f"unknown step type '{kind}'")

    async def _copy(self, client: httpx.AsyncClient, build: BuildRecord, name: str, args: list[str],
                    identity: dict[str, Any], state: State) -> None:
        files_hash = identity.get("filesHash")
        archive = self.service.upload_path(str(files_hash or ""))
        if not files_hash or not archive.is_file():
            raise StepFailed(name, f"COPY {args[0] if args else ''}: the files were not uploaded "
                                   f"(no upload for hash '{files_hash}')")
        src, dest = args[0], args[1] if len(args) > 1 else "."
        owner = args[2] if len(args) > 2 and args[2] else state.user
        if ":" not in owner:
            owner += ":"  # chown's form for "the user's login group"
        mode = args[3] if len(args) > 3 else ""
        in_sandbox = f"/tmp/.e2b-upload-{files_hash[:16]}"
        await agent_rpc.upload(client, archive, in_sandbox)
        target = self._absolute(dest, state.workdir) + ("/" if dest.endswith("/") else "")
        await self._command(client, build, name, ["/bin/bash", "-c", COPY_SCRIPT, "copy", src, target, owner, mode,
                                                  in_sandbox], "root", state.env, "/", shown=f"COPY {src} {dest}")

    async def _command(self, client: httpx.AsyncClient, build: BuildRecord, name: str, argv: list[str], user: str,
                       env: dict[str, str], cwd: str, shown: str) -> None:
        """Run one command of a step; its output is the build's log; a failure ends the build."""
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        pending = {"stdout": "", "stderr": ""}

        def output(stream: str, text: str) -> None:
            lines = (pending[stream] + text).split("\n")
            pending[stream] = lines.pop()
            for line in lines:
                tail.append(line)
                self.service.log(build, "info", line, step=name)

        try:
            code = await agent_rpc.run(client, argv, user, env, cwd, output)
        except agent_rpc.AgentCallError as exc:
            raise StepFailed(name, f"step {name} failed: {exc}") from None
        for stream, rest in pending.items():
            if rest:
                output(stream, "\n")
        if code != 0:
            raise StepFailed(name, f"step {name} failed: command '{shown.strip()[:300]}' exited with code {code}"
                                   + (":\n" + "\n".join(tail) if tail else ""), list(tail))

    async def check_ready(self, client: httpx.AsyncClient, build: BuildRecord | None, start_cmd: str | None,
                          ready_cmd: str | None, user: str, env: dict[str, str], workdir: str, step: str) -> None:
        """Start the start command, then run the ready check until it passes or the ready timeout ends."""
        cwd = workdir
        if start_cmd:
            try:
                await agent_rpc.start(client, ["/bin/bash", "-c", start_cmd], user, env, cwd)
            except agent_rpc.AgentCallError as exc:
                raise StepFailed(step, f"the start command '{start_cmd}' could not start: {exc}") from None
        if not ready_cmd:
            return
        deadline = time.monotonic() + self.ready_timeout
        last: deque[str] = deque(maxlen=TAIL_LINES)
        while True:
            last.clear()
            try:
                code = await asyncio.wait_for(
                    agent_rpc.run(client, ["/bin/bash", "-c", ready_cmd], user, env, cwd,
                                  lambda _s, text: last.extend(text.splitlines())),
                    max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                code = -1
            except agent_rpc.AgentCallError as exc:
                raise StepFailed(step, f"the ready check '{ready_cmd}' could not run: {exc}") from None
            if code == 0:
                return
            if time.monotonic() >= deadline:
                raise StepFailed(step, f"the ready check '{ready_cmd}' did not pass within {self.ready_timeout:g} s "
                                       f"(last exit code {code})", list(last))
            await asyncio.sleep(READY_INTERVAL)

    # -- sandboxes ---------------------------------------------------------------------------------
    async def _in_sandbox(self, build: BuildRecord, state: State,
                          work: Callable[[httpx.AsyncClient], Awaitable[None]], capture: bool = True) -> str:
        """Boot a sandbox on `state`'s layers, do `work` in it, and keep what it changed as a layer.

        Returns the new layer's id, or "" when the step changed no files (or `capture` is off).
        """
        service = self.service
        fleet = service.fleet
        layers = service.layer_paths(build.base_template, state.layers)
        # Without the egress authority: the step's files become a layer, shared beyond this server.
        booted = await fleet.booter.boot(build.base_template, internet=True, layers=layers, trust=False)
        container = booted.container
        client = agent_client(container)
        try:
            await work(client)
            if not capture:
                return ""

            def keep() -> str:
                container.stop()
                container.disk.ensure_mounted()
                if not any(container.upper.iterdir()):
                    return ""
                staging = self.store.staging()
                try:
                    copy_tree(container.upper, staging / "fs")
                    return self.store.commit(staging / "fs", fleet.id_base, {"build": build.build_id})
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise

            return await asyncio.to_thread(keep)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
            await asyncio.to_thread(container.destroy)


def builtin_image(image: str) -> str | None:
    """The built-in template an image reference stands for (E2B's own base images), if any."""
    name = image.split("@")[0]
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    for prefix in ("docker.io/", "index.docker.io/"):
        repo = repo.removeprefix(prefix)
    return BUILTIN_IMAGES.get(repo)


def upload_dir(home: Path) -> Path:
    return home / "templates" / "files"


__all__ = ["BUILDING", "ERROR", "READY", "WAITING", "Base", "Builder", "StepFailed", "builtin_image"]
