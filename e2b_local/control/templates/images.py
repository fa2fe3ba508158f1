"""Bases pulled from container registries (`from_image`), on the host, with skopeo and umoci.

skopeo copies the image from its registry into an OCI layout (with the credentials the SDK passed),
umoci unpacks its layers into one directory owned by the storage range, and that directory becomes
the bottom layer of the template, keyed by the image's manifest digest so that a rebuild of the same
image pulls nothing again. The image's files lie over e2b-local's own base root filesystem (which
holds the sandbox agent's runtime); a first step, run inside the sandbox, gives the image E2B's
`user` account when it has none.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from e2b_local.control.templates.builder import DEFAULT_USER, DEFAULT_WORKDIR, Base, Builder, BuildHost, StepFailed
from e2b_local.control.templates.layers import cache_key
from e2b_local.control.templates.records import BuildRecord
from e2b_local.isolation.rootfs import HOST_ID_BASE, ID_RANGE

# Registries on this machine speak plain HTTP, as Docker allows for them.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Gives an image E2B's default user when it has none (any POSIX shell; useradd or BusyBox adduser).
PROVISION_SCRIPT = (
    f"id -u {DEFAULT_USER} >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/sh {DEFAULT_USER} 2>/dev/null"
    f" || adduser -D -u 1000 {DEFAULT_USER}; mkdir -p {DEFAULT_WORKDIR}; chown {DEFAULT_USER} {DEFAULT_WORKDIR}"
)


def registry_of(image: str) -> str:
    """The registry host an image reference names (Docker Hub when it names none)."""
    first = image.split("/")[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _credentials(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    if config.get("type") not in (None, "registry"):
        raise StepFailed("base", f"registry credentials of type '{config.get('type')}' are not supported here; "
                                 "use a username and password")
    username, password = config.get("username"), config.get("password")
    if not username or not password:
        return None
    return f"{username}:{password}"


def _run(args: list[str]) -> tuple[int, str]:
    import subprocess

    # Success is read from the output as well: the server's reaper (waitpid(-1)) may take the exit status.
    result = subprocess.run(["sh", "-c", '"$@" && echo E2B-LOCAL-OK', "sh", *args], capture_output=True, text=True)
    ok = result.stdout.rstrip().endswith("E2B-LOCAL-OK")
    return (0 if ok else (result.returncode or 1)), (result.stderr or result.stdout).strip()


def _manifest_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def _config(layout: Path, manifest_digest: str) -> dict[str, Any]:
    algorithm, digest = manifest_digest.split(":", 1)
    manifest = json.loads((layout / "blobs" / algorithm / digest).read_text())
    algorithm, digest = manifest["config"]["digest"].split(":", 1)
    return json.loads((layout / "blobs" / algorithm / digest).read_text()).get("config") or {}


async def pull_base(service: BuildHost, builder: Builder, work_root: Path, build: BuildRecord, image: str,
                    credentials: dict[str, Any] | None, timeout: int) -> Base:
    """The base of a build from `image`: its files as a layer, its environment and working directory.

    The pull works in a directory under `work_root`; one that has not finished within `timeout`
    seconds has failed (a registry that does not answer, say).
    """
    registry = registry_of(image)
    if shutil.which("skopeo") is None or shutil.which("umoci") is None:
        raise StepFailed("base", f"cannot pull image '{image}' from registry {registry}: skopeo and umoci are "
                                 "not installed (install.sh installs them)")
    service.log(build, "info", f"Pulling image '{image}' from registry {registry}", step="base")
    work = Path(tempfile.mkdtemp(prefix=".pull-", dir=work_root))
    try:
        layout = work / "image"
        args = ["skopeo", "--command-timeout", f"{timeout}s", "--insecure-policy", "copy", "--retry-times", "0"]
        creds = _credentials(credentials)
        args += ["--src-creds", creds] if creds else ["--src-no-creds"]
        if registry.split(":")[0] in LOCAL_HOSTS or registry.startswith("[::1]"):
            args.append("--src-tls-verify=false")
        args += [f"docker://{image}", f"oci:{layout}:image"]
        code, output = await asyncio.to_thread(_run, args)
        if code != 0:
            last = output.splitlines()[-1] if output else f"exit status {code}"
            raise StepFailed("base", f"pulling image '{image}' from registry {registry} failed: {last}")
        digest = _manifest_digest(layout)
        config = _config(layout, digest)
        key = cache_key("image", {"digest": digest})
        layer = service.store.lookup(key)
        if layer is None:
            service.log(build, "info", f"Unpacking image '{image}' ({digest})", step="base")
            staging = service.store.staging()
            mapping = f"0:{HOST_ID_BASE}:{ID_RANGE}"
            code, output = await asyncio.to_thread(_run, ["umoci", "raw", "unpack", "--uid-map", mapping,
                                                          "--gid-map", mapping, "--image", f"{layout}:image",
                                                          str(staging / "fs")])
            if code != 0:
                shutil.rmtree(staging, ignore_errors=True)
                raise StepFailed("base", f"unpacking image '{image}' failed: {output[-500:]}")
            layer = service.store.commit(staging / "fs", HOST_ID_BASE, {"image": image, "digest": digest})
            service.store.remember(key, layer)
        else:
            service.log(build, "info", f"CACHED image '{image}' ({digest})", step="base")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    base = Base(key=key, layers=[layer], base_template="base", env=env)
    return await builder.provision(build, base, PROVISION_SCRIPT, config.get("WorkingDir") or None)
