"""Custom templates through the real SDK's Template builder, built and used on a real e2b-local."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import (
    AsyncSandbox,
    AsyncTemplate,
    BuildException,
    Sandbox,
    Template,
    wait_for_file,
    wait_for_port,
)
from e2b_code_interpreter import Sandbox as CodeSandbox

from e2b_local.isolation.cgroups import CGROUP_ROOT, CPU_PERIOD_US, PARENT, WORKLOAD, unified_has_controllers
from tests.conftest import LocalServer, our_cgroups, run_js, server_prefix, start_server, stop_server
from tests.local.nethost import namespaced_host
from tests.local.sandbox_helpers import registry_key

# A ready check that never passes fails the build after this long (the server's setting).
READY_TIMEOUT = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own: its template registry and layer store start empty."""
    srv = start_server(tmp_path_factory.mktemp("e2b-templates-home"),
                       env={"E2B_LOCAL_READY_TIMEOUT": str(READY_TIMEOUT), "E2B_LOCAL_POOL_SIZE": "0"})
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A build context directory with a file, a directory tree and a symlink."""
    (tmp_path / "hello.txt").write_text("hello from the context\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('app main')\n")
    (tmp_path / "app" / "lib").mkdir()
    (tmp_path / "app" / "lib" / "util.py").write_text("X = 1\n")
    os.symlink("main.py", tmp_path / "app" / "link.py")
    return tmp_path


def _logs() -> tuple[list[str], object]:
    lines: list[str] = []
    return lines, lambda entry: lines.append(entry.message)


def _run(sbx: Sandbox, cmd: str, user: str | None = None) -> str:
    kwargs = {"user": user} if user else {}
    return sbx.commands.run(cmd, **kwargs).stdout


def test_every_step_kind_then_create(server: LocalServer, context: Path) -> None:
    template = (
        Template(file_context_path=context)
        .from_template("base")
        .set_envs({"GREETING": "hi there", "APP_HOME": "/opt/app"})
        .run_cmd("echo $GREETING > /tmp/greeting && whoami > /tmp/whoami")
        .make_dir("/opt/app", user="root")
        .run_cmd("chown user: /opt/app", user="root")
        .copy("hello.txt", "/opt/app/")
        .copy("app", "/opt/app/src", mode=0o755)
        .copy("hello.txt", "/opt/app/owned-by-root.txt", user="root")
        .set_workdir("/opt/app/work")
        .run_cmd("pwd > where.txt")
        .make_symlink("/opt/app/hello.txt", "/opt/app/hello-link")
        .rename("/opt/app/work/where.txt", "/opt/app/where-moved.txt")
        .run_cmd("touch /opt/app/doomed && echo bye > /opt/app/doomed")
        .remove("/opt/app/doomed")
        .remove("/etc/motd", force=True, user="root")
        .set_user("root")
        .run_cmd("whoami > /root/whoami-root")
        .pip_install(["tabulate"])
        .set_user("user")
    )
    lines, on_logs = _logs()
    info = Template.build(template, "every-step:v1", cpu_count=1, memory_mb=768, on_build_logs=on_logs,
                          **server.sdk)
    assert info.name == "every-step:v1"
    assert any("RUN" in line and "whoami" in line for line in lines), lines
    assert Template.exists("every-step", **server.sdk)
    assert not Template.exists("no-such-template", **server.sdk)
    assert Template.exists("base", **server.sdk)

    sbx = Sandbox.create("every-step:v1", **server.sdk)
    try:
        assert _run(sbx, "cat /tmp/greeting").strip() == "hi there"
        assert _run(sbx, "cat /tmp/whoami").strip() == "user"
        assert _run(sbx, "cat /opt/app/hello.txt") == "hello from the context\n"
        assert _run(sbx, "stat -c '%U %a' /opt/app/hello.txt").strip().split()[0] == "user"
        assert _run(sbx, "stat -c '%U' /opt/app/owned-by-root.txt").strip() == "root"
        assert _run(sbx, "python3 /opt/app/src/main.py").strip() == "app main"
        assert _run(sbx, "cat /opt/app/src/lib/util.py").strip() == "X = 1"
        assert _run(sbx, "stat -c '%a' /opt/app/src/main.py").strip() == "755"
        assert _run(sbx, "readlink /opt/app/src/link.py").strip() == "main.py"
        assert _run(sbx, "cat /opt/app/where-moved.txt").strip() == "/opt/app/work"
        assert _run(sbx, "readlink /opt/app/hello-link").strip() == "/opt/app/hello.txt"
        assert _run(sbx, "test -e /opt/app/doomed && echo present || echo gone").strip() == "gone"
        assert _run(sbx, "test -e /etc/motd && echo present || echo gone").strip() == "gone"
        assert _run(sbx, "cat /root/whoami-root", user="root").strip() == "root"
        assert _run(sbx, "python3 -c 'import tabulate; print(tabulate.__name__)'").strip() == "tabulate"
        # As on E2B, the build's environment is not the sandboxes'.
        assert _run(sbx, "echo ${APP_HOME:-unset}").strip() == "unset"
        # Its own CPU and memory settings.
        info_ = sbx.get_info()
        assert (info_.cpu_count, info_.memory_mb) == (1, 768)
        assert _run(sbx, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true").strip() in (
            "", str(768 * 1024 * 1024))
    finally:
        sbx.kill()


def test_unknown_template_errors(server: LocalServer) -> None:
    from e2b import NotFoundException, SandboxException

    with pytest.raises((NotFoundException, SandboxException)) as caught:
        Sandbox.create("never-built-template", **server.sdk)
    assert "not found" in str(caught.value)
    template = Template().from_template("never-built-template").run_cmd("true")
    with pytest.raises(BuildException, match="never-built-template"):
        Template.build(template, "child-of-nothing", **server.sdk)


def test_cache_reuses_unchanged_prefix(server: LocalServer) -> None:
    def recipe() -> object:
        return (Template().from_template("base")
                .run_cmd("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /home/user/random")
                .run_cmd("date +%s%N > /home/user/stamp"))

    first_lines, first = _logs()
    Template.build(recipe(), "cached", on_build_logs=first, **server.sdk)
    second_lines, second = _logs()
    Template.build(recipe(), "cached", on_build_logs=second, **server.sdk)
    assert not any(line.startswith("CACHED") for line in first_lines), first_lines
    assert sum(line.startswith("CACHED") for line in second_lines) == 2, second_lines

    def contents(name: str) -> tuple[str, str]:
        sbx = Sandbox.create(name, **server.sdk)
        try:
            return _run(sbx, "cat /home/user/random"), _run(sbx, "cat /home/user/stamp")
        finally:
            sbx.kill()

    built = contents("cached")
    # A template sharing the first step's prefix reuses that layer and runs only its own step.
    other_lines, other = _logs()
    Template.build(recipe().run_cmd("echo extra > /home/user/extra"), "cached-plus", on_build_logs=other,
                   **server.sdk)
    assert sum(line.startswith("CACHED") for line in other_lines) == 2, other_lines
    assert contents("cached-plus") == built

    # skip_cache() rebuilds everything; a forced step rebuilds itself and what follows it.
    forced_lines, forced = _logs()
    Template.build(recipe(), "cached", skip_cache=True, on_build_logs=forced, **server.sdk)
    assert not any(line.startswith("CACHED") for line in forced_lines), forced_lines
    rebuilt = contents("cached")
    assert rebuilt[0] != built[0] and rebuilt[1] != built[1]

    partial_lines, partial = _logs()
    template = (Template().from_template("base")
                .run_cmd("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /home/user/random")
                .skip_cache()
                .run_cmd("date +%s%N > /home/user/stamp"))
    Template.build(template, "cached", on_build_logs=partial, **server.sdk)
    assert sum(line.startswith("CACHED") for line in partial_lines) == 1, partial_lines
    again = contents("cached")
    assert again[0] == rebuilt[0] and again[1] != rebuilt[1]


def test_delete_frees_unshared_layers(server: LocalServer) -> None:
    layers = server.home / "templates" / "layers"
    before = {p.name for p in layers.iterdir()}
    Template.build(Template().from_template("base").run_cmd("echo only-mine > /home/user/mine"), "doomed-tpl",
                   **server.sdk)
    mine = {p.name for p in layers.iterdir()} - before
    assert len(mine) == 1
    # What the step wrote, and not the server's egress authority, which each sandbox adds at its start.
    fs = layers / next(iter(mine)) / "fs"
    written = {str(p.relative_to(fs)) for p in fs.rglob("*") if p.is_file()}
    assert "home/user/mine" in written and not [f for f in written if "ca-certificates" in f or "ssl" in f], written
    headers = {"X-API-Key": server.api_key}
    template_id = httpx.get(f"{server.url}/templates/aliases/doomed-tpl", headers=headers).json()["templateID"]
    assert httpx.delete(f"{server.url}/templates/{template_id}", headers=headers).status_code == 204
    assert not Template.exists("doomed-tpl", **server.sdk)
    after = {p.name for p in layers.iterdir()}
    assert not (mine & after)
    assert before <= after
    assert httpx.delete(f"{server.url}/templates/{template_id}", headers=headers).status_code == 404


def test_failing_step_reports_step_exit_code_and_output(server: LocalServer) -> None:
    template = (Template().from_template("base")
                .run_cmd("echo first-step")
                .run_cmd("echo about to fail; echo 'the last words' >&2; exit 7"))
    with pytest.raises(BuildException) as caught:
        Template.build(template, "failing-step", **server.sdk)
    message = str(caught.value)
    assert "step 2" in message and "code 7" in message and "the last words" in message, message
    assert not Template.exists("failing-step", **server.sdk) or _has_no_ready_build("failing-step", server)


def _has_no_ready_build(name: str, server: LocalServer) -> bool:
    try:
        Sandbox.create(name, **server.sdk).kill()
    except Exception as exc:  # the SDK's error for a template without a ready build
        return "no ready build" in str(exc) or "not found" in str(exc)
    return False


def test_unknown_user_fails_the_build(server: LocalServer) -> None:
    template = Template().from_template("base").set_user("nobody-here").run_cmd("whoami")
    with pytest.raises(BuildException, match="nobody-here"):
        Template.build(template, "ghost-user", **server.sdk)


def test_start_and_ready_commands(server: LocalServer) -> None:
    template = (Template().from_template("base")
                .set_start_cmd("sleep 1; touch /tmp/started; python3 -m http.server 8123", wait_for_port(8123)))
    Template.build(template, "with-server", **server.sdk)
    sbx = Sandbox.create("with-server", **server.sdk)
    try:
        # Ready before create returned: the port answers at once.
        assert _run(sbx, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8123/").strip() == "200"
        assert _run(sbx, "test -f /tmp/started && echo yes").strip() == "yes"
    finally:
        sbx.kill()


def test_last_user_and_workdir_are_the_sandboxes_defaults(server: LocalServer) -> None:
    template = (Template().from_template("base")
                .make_dir("/srv/app", user="root")
                .set_workdir("/srv/app")
                .set_user("root"))
    Template.build(template, "root-in-srv", **server.sdk)
    sbx = Sandbox.create("root-in-srv", **server.sdk)
    try:
        assert _run(sbx, "whoami; pwd").split() == ["root", "/srv/app"]
        # A request that names its user still gets that user.
        assert _run(sbx, "whoami", user="user").strip() == "user"
        # A snapshot's sandboxes keep the template's defaults.
        snapshot = sbx.create_snapshot()
    finally:
        sbx.kill()
    clone = Sandbox.create(snapshot.snapshot_id, **server.sdk)
    try:
        assert _run(clone, "whoami; pwd").split() == ["root", "/srv/app"]
    finally:
        clone.kill()
        Sandbox.delete_snapshot(snapshot.snapshot_id, **server.sdk)
    # A template without either keeps E2B's defaults.
    Template.build(Template().from_template("base").run_cmd("true"), "plain-defaults", **server.sdk)
    plain = Sandbox.create("plain-defaults", **server.sdk)
    try:
        assert _run(plain, "whoami; pwd").split() == ["user", "/home/user"]
    finally:
        plain.kill()


def test_ready_check_that_never_passes_fails_with_its_timeout(server: LocalServer) -> None:
    template = Template().from_template("base").set_ready_cmd(wait_for_file("/tmp/never-there"))
    with pytest.raises(BuildException) as caught:
        Template.build(template, "never-ready", **server.sdk)
    message = str(caught.value)
    assert "never-there" in message and re.search(rf"\b{READY_TIMEOUT}\s*s\b", message), message


def test_background_build_tags_and_status(server: LocalServer) -> None:
    template = Template().from_template("base").run_cmd("echo background-build > /home/user/marker")
    info = Template.build_in_background(template, "in-background:first", **server.sdk)
    status = Template.get_build_status(info, **server.sdk)
    assert status.build_id == info.build_id and status.template_id == info.template_id
    entries = []
    deadline = time.monotonic() + 300
    while status.status.value in ("waiting", "building"):
        assert time.monotonic() < deadline, "the build did not finish in time"
        time.sleep(0.3)
        status = Template.get_build_status(info, logs_offset=len(entries), **server.sdk)
        entries += status.log_entries
    assert status.status.value == "ready", status.reason
    assert any("background-build" in e.message for e in entries), [e.message for e in entries]
    # Offsets page through the same entries.
    replay = Template.get_build_status(info, logs_offset=1, **server.sdk).log_entries
    assert [e.message for e in replay][:3] == [e.message for e in entries][1:4]

    assigned = Template.assign_tags("in-background:first", ["stable", "prod"], **server.sdk)
    assert assigned.build_id == info.build_id and assigned.tags == ["stable", "prod"]
    assert {t.tag for t in Template.get_tags("in-background", **server.sdk)} == {"first", "stable", "prod"}
    sbx = Sandbox.create("in-background:stable", **server.sdk)
    try:
        assert _run(sbx, "cat /home/user/marker").strip() == "background-build"
    finally:
        sbx.kill()
    Template.remove_tags("in-background", "prod", **server.sdk)
    assert {t.tag for t in Template.get_tags("in-background", **server.sdk)} == {"first", "stable"}
    with pytest.raises(Exception, match=r"no ready build|not found"):
        Sandbox.create("in-background:prod", **server.sdk)


def test_from_dockerfile(server: LocalServer, context: Path) -> None:
    dockerfile = (
        "FROM e2bdev/base:latest\n"
        "ENV DOCKER_VAR=from-dockerfile\n"
        "USER root\n"
        "RUN mkdir -p /srv/site && echo \"$DOCKER_VAR\" > /srv/site/env.txt\n"
        "WORKDIR /srv/site\n"
        "COPY hello.txt ./\n"
        "RUN cat hello.txt > copied.txt\n"
        "USER user\n"
    )
    template = Template(file_context_path=context).from_dockerfile(dockerfile)
    Template.build(template, "from-dockerfile", **server.sdk)
    sbx = Sandbox.create("from-dockerfile", **server.sdk)
    try:
        assert _run(sbx, "cat /srv/site/env.txt").strip() == "from-dockerfile"
        assert _run(sbx, "cat /srv/site/copied.txt") == "hello from the context\n"
    finally:
        sbx.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two real registries on loopback (Debian's docker-registry), one needing a password, each holding
    a small image built with umoci and pushed with skopeo."""
    import shutil
    import subprocess
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: what the registry's htpasswd wants

    if not (shutil.which("docker-registry") and shutil.which("skopeo") and shutil.which("umoci")):
        pytest.skip("docker-registry, skopeo and umoci are needed (install.sh --test installs them)")
    root = tmp_path_factory.mktemp("registries")
    (root / "htpasswd").write_text(f"tester:{crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    processes, addresses = [], {}
    for name, auth in (("open", ""), ("private", f"auth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\n")):
        port = _free_port()
        config = root / f"{name}.yml"
        config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/{name}-data\n"
                          f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
        log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the registry's lifetime
        processes.append(subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log))
        addresses[name] = f"127.0.0.1:{port}"
    try:
        layout = root / "layout"
        subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
        subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
        bundle = root / "bundle"
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True)
        (bundle / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
        (bundle / "rootfs" / "etc" / "image-marker").write_text("pulled from a registry\n")
        subprocess.run(["umoci", "repack", "--image", f"{layout}:v1", str(bundle)], check=True)
        subprocess.run(["umoci", "config", "--image", f"{layout}:v1", "--config.env", "IMAGE_VAR=from-image"],
                       check=True)
        deadline = time.monotonic() + 30
        for name, creds in (("open", []), ("private", ["--dest-creds", "tester:s3cret"])):
            while True:
                result = subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", *creds,
                                         f"oci:{layout}:v1", f"docker://{addresses[name]}/tests/marker:v1"],
                                        capture_output=True, text=True)
                if result.returncode == 0:
                    break
                assert time.monotonic() < deadline, result.stderr
                time.sleep(0.3)
        yield addresses
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def test_from_image_pulled_from_registries(server: LocalServer, registries: dict[str, str]) -> None:
    open_image = f"{registries['open']}/tests/marker:v1"
    Template.build(Template().from_image(open_image).run_cmd("cat /etc/image-marker > /home/user/seen"),
                   "from-open-registry", **server.sdk)
    private_image = f"{registries['private']}/tests/marker:v1"
    with pytest.raises(BuildException, match=re.escape(registries["private"])):
        Template.build(Template().from_image(private_image), "from-private-no-creds", **server.sdk)
    Template.build(Template().from_image(private_image, username="tester", password="s3cret")
                   .run_cmd("echo $IMAGE_VAR > /home/user/var"), "from-private-registry", **server.sdk)
    for name, command, expected in (("from-open-registry", "cat /home/user/seen", "pulled from a registry"),
                                    ("from-private-registry", "cat /home/user/var", "from-image")):
        sbx = Sandbox.create(name, **server.sdk)
        try:
            assert _run(sbx, command).strip() == expected
        finally:
            sbx.kill()


def test_unreachable_registry_fails_fast_naming_image_and_registry(server: LocalServer) -> None:
    image = f"127.0.0.1:{_free_port()}/nowhere/image:1"
    with pytest.raises(BuildException) as caught:
        Template.build(Template().from_image(image), "from-nowhere", **server.sdk)
    message = str(caught.value)
    assert image in message and image.split("/")[0] in message, message


def _wait_for_log(info: object, server: LocalServer, text: str, timeout: float = 300) -> list[str]:
    """Poll a background build until a log entry holds `text`; the entries so far."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(text in m for m in messages):
        assert time.monotonic() < deadline, f"no log entry with {text!r}: {messages}"
        status = Template.get_build_status(info, logs_offset=len(messages), **server.sdk)
        messages += [e.message for e in status.log_entries]
        assert status.status.value in ("waiting", "building"), (status.status, status.reason, messages)
        time.sleep(0.3)
    return messages


def test_a_restart_mid_build_fails_the_build_and_leaves_nothing_usable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_server(home, env={"E2B_LOCAL_POOL_SIZE": "0"})
    try:
        template = (Template().from_template("base").run_cmd("echo first-step > /home/user/first")
                    .run_cmd("echo in-second-step; sleep 600"))
        info = Template.build_in_background(template, "interrupted", **first.sdk)
        _wait_for_log(info, first, "in-second-step")
    finally:
        # A crash, not a shutdown: nothing gets to record the build's end.
        first.process.kill()
        first.process.wait()
    second = start_server(home, env={"E2B_LOCAL_POOL_SIZE": "0"})
    try:
        status = Template.get_build_status(info, **second.sdk)
        assert status.status.value == "error"
        assert "interrupted" in status.reason.message and "restarted" in status.reason.message
        with pytest.raises(Exception, match="no ready build"):
            Sandbox.create("interrupted", **second.sdk)
        # The build's sandbox and its half-made layer are gone.
        assert list((home / "sandboxes").iterdir()) == []
        assert [p.name for p in (home / "templates" / "layers").iterdir() if p.name.startswith(".staging-")] == []
        # What the finished step left is cached still: a build on the same prefix reuses it.
        lines, on_logs = _logs()
        retry = Template().from_template("base").run_cmd("echo first-step > /home/user/first").run_cmd("true")
        Template.build(retry, "interrupted", on_build_logs=on_logs, **second.sdk)
        assert any(line.startswith("CACHED") and "first-step" in line for line in lines), lines
        sbx = Sandbox.create("interrupted", **second.sdk)
        try:
            assert _run(sbx, "cat /home/user/first").strip() == "first-step"
        finally:
            sbx.kill()
    finally:
        stop_server(second)


def test_concurrent_builds_block_neither_the_server_nor_each_other(server: LocalServer) -> None:
    infos = {}
    for name in ("concurrent-a", "concurrent-b"):
        template = Template().from_template("base").run_cmd(f"echo started-{name}; sleep 30")
        infos[name] = Template.build_in_background(template, name, **server.sdk)
    for name, info in infos.items():
        _wait_for_log(info, server, f"started-{name}")
    # Both steps run at once: each build is still in its step after the other's has started.
    assert {Template.get_build_status(i, **server.sdk).status.value for i in infos.values()} == {"building"}
    # Meanwhile the API answers and a sandbox starts and runs commands.
    sbx = Sandbox.create("base", **server.sdk)
    try:
        assert sbx.sandbox_id in {s.sandbox_id for s in Sandbox.list(**server.sdk).next_items()}
        assert _run(sbx, "echo still-served").strip() == "still-served"
        assert {Template.get_build_status(i, **server.sdk).status.value for i in infos.values()} == {"building"}
    finally:
        sbx.kill()
    deadline = time.monotonic() + 300
    for info in infos.values():
        while (status := Template.get_build_status(info, **server.sdk)).status.value in ("waiting", "building"):
            assert time.monotonic() < deadline, "the builds did not finish in time"
            time.sleep(0.5)
        assert status.status.value == "ready", status.reason


def test_apt_install_step(server: LocalServer) -> None:
    # Packages the base root filesystem lacks, from the Debian mirror the sandboxes reach.
    template = Template().from_template("base").apt_install(["tree", "jq"], no_install_recommends=True)
    Template.build(template, "with-apt", **server.sdk)
    sbx = Sandbox.create("with-apt", **server.sdk)
    try:
        assert _run(sbx, "dpkg-query -W -f '${Status}' tree jq").count("install ok installed") == 2
        assert _run(sbx, "echo '{\"a\": [1, 2]}' | jq -c '.a'").strip() == "[1,2]"
        assert _run(sbx, "mkdir -p /tmp/t/sub && tree -i --noreport /tmp/t").split() == ["/tmp/t", "sub"]
    finally:
        sbx.kill()


def test_npm_install_steps(server: LocalServer) -> None:
    template = (Template().from_template("base")
                .set_workdir("/home/user/app")
                .run_cmd("npm init -y > /dev/null")
                .npm_install("left-pad")
                .npm_install(["is-number"], dev=True)
                .npm_install("semver", g=True))
    Template.build(template, "with-npm", **server.sdk)
    sbx = Sandbox.create("with-npm", **server.sdk)
    try:
        script = "console.log(require('left-pad')('7', 3, '0'), require('is-number')(5))"
        assert _run(sbx, f"cd /home/user/app && node -e \"{script}\"").strip() == "007 true"
        manifest = _run(sbx, "cd /home/user/app && node -p \"const p = require('./package.json'); "
                             "Object.keys(p.dependencies) + ' ' + Object.keys(p.devDependencies)\"")
        assert manifest.strip() == "left-pad is-number"
        # Local installs belong to the step's user; -g installs as root, onto the PATH.
        assert _run(sbx, "stat -c %U /home/user/app/node_modules").strip() == "user"
        assert _run(sbx, "semver 1.2.3 -i minor").strip() == "1.3.0"
        assert _run(sbx, "stat -c %U \"$(command -v semver)\"").strip() == "root"
    finally:
        sbx.kill()


@pytest.fixture(scope="module")
def git_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`address:port` of a git server (smart HTTP) holding repository `demo.git`, on a test host that
    sandboxes reach: `main` with two commits, `feature` with a third."""
    if shutil.which("git") is None:
        pytest.skip("git is needed on the host to serve a repository (install.sh --test installs it)")
    root = tmp_path_factory.mktemp("git")
    work = root / "work"

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(work), "-c", "user.name=Tester", "-c", "user.email=tester@example.com",
                        *args], check=True, capture_output=True)

    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("first\n")
    git("add", "README")
    git("commit", "-q", "-m", "first")
    (work / "README").write_text("second\n")
    git("commit", "-q", "-am", "second")
    git("checkout", "-q", "-b", "feature")
    (work / "feature.txt").write_text("on the feature branch\n")
    git("add", "feature.txt")
    git("commit", "-q", "-m", "feature")
    git("checkout", "-q", "main")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "served" / "demo.git")], check=True)
    server = str(Path(__file__).with_name("git_http.py"))
    with namespaced_host(server_args=[server, "{address}", "{port}", str(root / "served")]) as target:
        yield target


def test_git_clone_steps(server: LocalServer, git_host: str) -> None:
    url = f"http://{git_host}/demo.git"
    template = (Template().from_template("base")
                .git_clone(url, "/home/user/demo")
                .git_clone(url, "/opt/feature", branch="feature", depth=1, user="root"))
    Template.build(template, "with-git", **server.sdk)
    sbx = Sandbox.create("with-git", **server.sdk)
    try:
        assert _run(sbx, "cat /home/user/demo/README").strip() == "second"
        assert _run(sbx, "git -C /home/user/demo log --format=%s").split() == ["second", "first"]
        assert _run(sbx, "git -C /home/user/demo rev-parse --abbrev-ref HEAD").strip() == "main"
        assert _run(sbx, "stat -c %U /home/user/demo/.git").strip() == "user"
        feature = "git -C /opt/feature"
        assert _run(sbx, "cat /opt/feature/feature.txt").strip() == "on the feature branch"
        assert _run(sbx, f"{feature} rev-parse --abbrev-ref HEAD", user="root").strip() == "feature"
        # Shallow and single-branch: one commit, one remote branch.
        assert _run(sbx, f"{feature} rev-list --count HEAD", user="root").strip() == "1"
        assert _run(sbx, f"{feature} branch -r --format='%(refname:short)'", user="root").split() == ["origin/feature"]
        assert _run(sbx, "stat -c %U /opt/feature").strip() == "root"
    finally:
        sbx.kill()


def _settled_sandboxes(server: LocalServer, timeout: float = 180) -> set[str]:
    """The keys of the server's sandboxes (directories, each with its cgroup) once the warm pools stop changing."""
    prefix = server_prefix(server.home)
    previous = None
    deadline = time.monotonic() + timeout
    while True:
        current = ({p.name for p in (server.home / "sandboxes").iterdir()}, our_cgroups(prefix))
        if current == previous and current[0] == current[1]:
            return current[0]
        assert time.monotonic() < deadline, f"the sandboxes did not settle: {current}"
        previous = current
        time.sleep(1.5)


def _limits_on_host(key: str) -> tuple[int, int]:
    """(CPU quota per period in µs, memory limit of its programs in bytes) of a sandbox's cgroup."""
    if unified_has_controllers():
        cgroup = CGROUP_ROOT / PARENT / key
        return int((cgroup / "cpu.max").read_text().split()[0]), int((cgroup / "memory.max").read_text())
    return (int((CGROUP_ROOT / "cpu" / PARENT / key / "cpu.cfs_quota_us").read_text()),
            int((CGROUP_ROOT / "memory" / PARENT / key / WORKLOAD / "memory.limit_in_bytes").read_text()))


# What a sandbox of the warm-pool tests' template shows; the same from a fresh and a pre-started one.
PROBE = "cat /home/user/version; cat /tmp/started; hostname; whoami; pwd; echo $FROM_CREATE; echo $E2B_SANDBOX_ID"


def _probe(sbx: Sandbox) -> list[str]:
    return _run(sbx, PROBE).split()


def test_a_custom_template_keeps_a_warm_sandbox_fresh_for_its_rebuilds_and_gone_on_delete(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # Room for two: a rebuild's new layers would not push the old ones' sandbox out.
    srv = start_server(home, env={"E2B_LOCAL_POOL_SIZE": "1", "E2B_LOCAL_TEMPLATE_POOL": "2"})
    try:
        def recipe(version: str) -> Template:
            return (Template().from_template("base")
                    .run_cmd(f"echo {version} > /home/user/version")
                    .set_start_cmd("echo started-$((1 + 1)) > /tmp/started", wait_for_file("/tmp/started")))

        Template.build(recipe("one"), "warm", cpu_count=1, memory_mb=512, **srv.sdk)
        idle = _settled_sandboxes(srv)  # the built-in templates' pre-started sandboxes

        def create_and_probe() -> tuple[str, list[str]]:
            sbx = Sandbox.create("warm", envs={"FROM_CREATE": "yes"}, **srv.sdk)
            try:
                key = registry_key(home, sbx.sandbox_id)
                assert _limits_on_host(key) == (CPU_PERIOD_US, 512 * 1024 * 1024)
                assert (sbx.get_info().cpu_count, sbx.get_info().memory_mb) == (1, 512)
                probe = _probe(sbx)
                assert probe[2] == f"e2b-{sbx.sandbox_id[:8]}" and probe[-1] == sbx.sandbox_id
                return key, probe[:2] + probe[3:-1]
            finally:
                sbx.kill()

        fresh_key, fresh = create_and_probe()
        assert fresh_key not in idle and fresh == ["one", "started-2", "user", "/home/user", "yes"]
        # The first create left the template a pre-started sandbox; the next create is served by it,
        # with the start command run, the agent set up and the template's limits, as a fresh one.
        warm = _settled_sandboxes(srv) - idle
        assert len(warm) == 1
        pooled_key, pooled = create_and_probe()
        assert pooled_key in warm and pooled == fresh
        stale = _settled_sandboxes(srv) - idle
        assert len(stale) == 1 and stale != warm

        # A rebuild: the next create runs on the new layers, and the sandbox waiting on the old ones is gone.
        Template.build(recipe("two"), "warm", **srv.sdk)
        sbx = Sandbox.create("warm", **srv.sdk)
        try:
            assert _run(sbx, "cat /home/user/version").strip() == "two"
            assert registry_key(home, sbx.sandbox_id) not in stale
        finally:
            sbx.kill()
        rebuilt = _settled_sandboxes(srv) - idle
        assert len(rebuilt) == 1 and not rebuilt & stale

        # Deleting the template leaves no sandbox of it: only the built-in templates' remain.
        headers = {"X-API-Key": srv.api_key}
        template_id = httpx.get(f"{srv.url}/templates/aliases/warm", headers=headers).json()["templateID"]
        assert httpx.delete(f"{srv.url}/templates/{template_id}", headers=headers).status_code == 204
        assert _settled_sandboxes(srv) == idle
    finally:
        stop_server(srv)


def test_warm_sandboxes_of_custom_templates_are_bounded_and_go_with_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    srv = start_server(home, env={"E2B_LOCAL_POOL_SIZE": "1", "E2B_LOCAL_TEMPLATE_POOL": "1"})
    stopped = False
    try:
        for name in ("warm-a", "warm-b"):
            Template.build(Template().from_template("base").run_cmd(f"echo {name} > /home/user/name"), name,
                           **srv.sdk)
        idle = _settled_sandboxes(srv)
        Sandbox.create("warm-a", **srv.sdk).kill()
        waiting_a = _settled_sandboxes(srv) - idle
        assert len(waiting_a) == 1
        # One custom template keeps a sandbox (the setting): the one created from last.
        Sandbox.create("warm-b", **srv.sdk).kill()
        waiting_b = _settled_sandboxes(srv) - idle
        assert len(waiting_b) == 1 and waiting_b != waiting_a
        sbx = Sandbox.create("warm-b", **srv.sdk)
        try:
            assert registry_key(home, sbx.sandbox_id) in waiting_b
            assert _run(sbx, "cat /home/user/name").strip() == "warm-b"
        finally:
            sbx.kill()
        _settled_sandboxes(srv)
        stop_server(srv)
        stopped = True
        # Stopping the server discards every pre-started sandbox, built-in and custom.
        assert our_cgroups(server_prefix(home)) == set()
        assert list((home / "sandboxes").iterdir()) == []
    finally:
        if not stopped:
            stop_server(srv)


async def test_async_builder_builds_and_creates(server: LocalServer) -> None:
    template = (AsyncTemplate().from_template("base").set_envs({"BUILT_BY": "async"})
                .run_cmd("echo async-built $BUILT_BY > /home/user/marker.txt").set_workdir("/home/user"))
    lines, on_logs = _logs()
    info = await AsyncTemplate.build(template, "async-built:v1", cpu_count=1, memory_mb=512, on_build_logs=on_logs,
                                     **server.sdk)
    assert info.name == "async-built:v1" and "v1" in info.tags
    assert lines, "the build streamed no log entry"
    assert await AsyncTemplate.exists("async-built", **server.sdk)
    sbx = await AsyncSandbox.create("async-built:v1", **server.sdk)
    try:
        # The build's environment is not the sandbox's (set_envs is build time only).
        result = await sbx.commands.run("cat marker.txt; echo ${BUILT_BY:-unset}")
        assert result.stdout == "async-built async\nunset\n"
    finally:
        await sbx.kill()


JS_TEMPLATE = """
const { Sandbox, Template } = require("e2b");
(async () => {
  const template = Template().fromTemplate("base").setEnvs({ BUILT_BY: "node" })
    .runCmd("echo node-built $BUILT_BY > /home/user/marker.txt");
  const logs = [];
  const info = await Template.build(template, "node-built:v1",
                                    { cpuCount: 1, memoryMB: 512, onBuildLogs: (e) => logs.push(e.message) });
  const exists = await Template.exists("node-built");
  const sbx = await Sandbox.create("node-built:v1");
  try {
    const run = await sbx.commands.run("cat /home/user/marker.txt; echo ${BUILT_BY:-unset}");
    console.log(JSON.stringify({ name: info.name, tags: info.tags, logs: logs.length, exists, stdout: run.stdout }));
  } finally {
    await sbx.kill();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_js_builder_builds_and_creates(server: LocalServer) -> None:
    out = run_js(JS_TEMPLATE, server.env, timeout=600)
    assert isinstance(out, dict)
    assert out["name"] == "node-built:v1" and "v1" in out["tags"]
    assert out["logs"] > 0 and out["exists"] is True
    assert out["stdout"] == "node-built node\nunset\n"


def test_kernels_of_a_custom_template_are_executed_not_forked(server: LocalServer) -> None:
    # A kernel zygote runs its template's Python as host root: none for layers a template build made,
    # whose Python (here a .pth file every start of it runs) is the builder's.
    probe = "echo 'import os; open(\"/tmp/pth-ran\", \"a\").close()'"
    template = Template().from_template("code-interpreter-v1").run_cmd(
        f"{probe} > /usr/local/lib/python3.11/dist-packages/zz-probe.pth", user="root")
    Template.build(template, "custom-kernels", **server.sdk)
    custom = CodeSandbox.create("custom-kernels", **server.sdk)
    builtin = CodeSandbox.create("code-interpreter-v1", **server.sdk)
    try:
        cmdline = "open('/proc/self/cmdline').read().split(chr(0))"
        assert "ipykernel_launcher" in custom.run_code(cmdline).text
        assert "e2b_local.zygote.kernels" in builtin.run_code(cmdline).text
        # The .pth file ran in the custom template's own kernel, inside the sandbox.
        assert custom.files.exists("/tmp/pth-ran")
    finally:
        custom.kill()
        builtin.kill()
