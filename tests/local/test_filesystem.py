"""envd's filesystem service and `/files` routes through the real synchronous SDK.

Every test works in its own directory of one shared sandbox, so they stay independent.
"""

from __future__ import annotations

import gzip
import io
import os
import uuid
from collections.abc import Iterator

import httpx
import pytest
from e2b import (
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotEnoughSpaceException,
    Sandbox,
    SandboxException,
)
from e2b.sandbox.filesystem.filesystem import WriteEntry


@pytest.fixture(scope="module")
def sbx(e2b_server) -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    yield sandbox
    sandbox.kill()


@pytest.fixture
def workdir(sbx: Sandbox) -> str:
    """A fresh directory under the default user's home."""
    path = f"/home/user/t-{uuid.uuid4().hex[:8]}"
    assert sbx.files.make_dir(path)
    return path


def _sandbox_headers(sbx: Sandbox) -> dict[str, str]:
    # Signed URLs carry no sandbox id; against one local port the routing headers must come along.
    return {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}


# -- reading and writing ---------------------------------------------------------------------------

def test_write_and_read_text_bytes_and_stream(sbx: Sandbox, workdir: str) -> None:
    info = sbx.files.write(f"{workdir}/hello.txt", "héllo wörld\n")
    assert (info.name, info.path, info.type) == ("hello.txt", f"{workdir}/hello.txt", FileType.FILE)
    assert sbx.files.read(f"{workdir}/hello.txt") == "héllo wörld\n"
    payload = bytes(range(256)) * 4
    sbx.files.write(f"{workdir}/blob.bin", payload)
    assert sbx.files.read(f"{workdir}/blob.bin", format="bytes") == bytearray(payload)
    with sbx.files.read(f"{workdir}/blob.bin", format="stream") as stream:
        assert b"".join(stream) == payload


def test_large_file_round_trip(sbx: Sandbox, workdir: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    sbx.files.write(f"{workdir}/large.bin", payload)
    assert bytes(sbx.files.read(f"{workdir}/large.bin", format="bytes")) == payload
    assert sbx.commands.run(f"stat -c %s {workdir}/large.bin").stdout.strip() == str(len(payload))


def test_overwrite_truncates(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/f.txt", "a much longer first version")
    sbx.files.write(f"{workdir}/f.txt", "short")
    assert sbx.files.read(f"{workdir}/f.txt") == "short"


def test_relative_and_home_paths_resolve_against_home(sbx: Sandbox, workdir: str) -> None:
    name = workdir.rsplit("/", 1)[1]
    info = sbx.files.write(f"{name}/rel.txt", "relative")
    assert info.path == f"{workdir}/rel.txt"
    assert sbx.files.read(f"~/{name}/rel.txt") == "relative"


def test_octet_stream_gzip_file_like_and_iterable_uploads(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/octet.txt", "octet", use_octet_stream=True)
    sbx.files.write(f"{workdir}/gz.txt", "compressed " * 1000, gzip=True)
    sbx.files.write(f"{workdir}/io.bin", io.BytesIO(b"from a file object"))
    sbx.files.write(f"{workdir}/iter.bin", iter([b"chunk1-", b"chunk2-", b"chunk3"]))
    sbx.files.write(f"{workdir}/deep/er/iter-gz.bin", iter([b"x" * 100_000, b"y"]), gzip=True)
    assert sbx.files.read(f"{workdir}/octet.txt") == "octet"
    assert sbx.files.read(f"{workdir}/gz.txt", gzip=True) == "compressed " * 1000
    assert sbx.files.read(f"{workdir}/io.bin") == "from a file object"
    assert sbx.files.read(f"{workdir}/iter.bin") == "chunk1-chunk2-chunk3"
    assert sbx.files.read(f"{workdir}/deep/er/iter-gz.bin", format="bytes") == b"x" * 100_000 + b"y"


def test_write_files_several_files_in_nested_directories(sbx: Sandbox, workdir: str) -> None:
    entries: list[WriteEntry] = [
        {"path": f"{workdir}/a.txt", "data": "A"},
        {"path": f"{workdir}/sub/b.txt", "data": b"B"},
        {"path": f"{workdir}/sub/deeper/c.json", "data": '{"c": 1}'},
        {"path": f"{workdir}/with space/d e.txt", "data": "D"},
    ]
    infos = sbx.files.write_files(entries)
    assert [i.path for i in infos] == [e["path"] for e in entries]
    for entry in entries:
        expected = entry["data"] if isinstance(entry["data"], str) else entry["data"].decode()
        assert sbx.files.read(entry["path"]) == expected
    owners = sbx.commands.run(f"stat -c %U:%G {workdir}/sub {workdir}/sub/deeper/c.json").stdout.split()
    assert owners == ["user:user", "user:user"]


def test_metadata_is_stored_and_replaced(sbx: Sandbox, workdir: str) -> None:
    path = f"{workdir}/meta.txt"
    info = sbx.files.write(path, "m", metadata={"Owner": "alice", "stage": "draft"})
    assert info.metadata == {"owner": "alice", "stage": "draft"}  # envd lower-cases keys
    assert sbx.files.get_info(path).metadata == {"owner": "alice", "stage": "draft"}
    stored = sbx.commands.run(f"python3 -c \"import os; print(os.getxattr('{path}', 'user.e2b.owner'))\"")
    assert stored.stdout.strip() == "b'alice'"  # an extended attribute, as envd stores it
    sbx.files.write(path, "m2", metadata={"stage": "final"}, use_octet_stream=True)
    assert sbx.files.get_info(path).metadata == {"stage": "final"}
    listed = {e.name: e for e in sbx.files.list(workdir)}
    assert listed["meta.txt"].metadata == {"stage": "final"}
    sbx.files.write(path, "m3")
    assert sbx.files.get_info(path).metadata is None


def test_missing_file_and_directory_errors(sbx: Sandbox, workdir: str) -> None:
    with pytest.raises(FileNotFoundException):
        sbx.files.read(f"{workdir}/missing.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.read(f"{workdir}/missing.txt", format="stream")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info(f"{workdir}/missing.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.list(f"{workdir}/missing")
    with pytest.raises(InvalidArgumentException):
        sbx.files.read(workdir)  # a directory
    with pytest.raises(InvalidArgumentException):
        sbx.files.write(workdir, "into a directory")
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write("/dev/full", "no room")


# -- entries ---------------------------------------------------------------------------------------

def test_list_depth_and_entry_info(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write_files([
        {"path": f"{workdir}/top.txt", "data": "12345"},
        {"path": f"{workdir}/d1/mid.txt", "data": "x"},
        {"path": f"{workdir}/d1/d2/low.txt", "data": "x"},
    ])
    one = sbx.files.list(workdir)
    assert sorted(e.name for e in one) == ["d1", "top.txt"]
    assert workdir not in [e.path for e in one]
    two = sbx.files.list(workdir, depth=2)
    assert sorted(e.path for e in two) == sorted([
        f"{workdir}/d1", f"{workdir}/d1/d2", f"{workdir}/d1/mid.txt", f"{workdir}/top.txt",
    ])
    three = sbx.files.list(workdir, depth=3)
    assert f"{workdir}/d1/d2/low.txt" in [e.path for e in three]
    top = {e.name: e for e in one}["top.txt"]
    assert (top.type, top.size, top.mode, top.permissions) == (FileType.FILE, 5, 0o644, "-rw-r--r--")
    assert (top.owner, top.group, top.symlink_target) == ("user", "user", None)
    d1 = {e.name: e for e in one}["d1"]
    assert (d1.type, d1.mode, d1.permissions) == (FileType.DIR, 0o755, "drwxr-xr-x")
    with pytest.raises(InvalidArgumentException):
        sbx.files.list(f"{workdir}/top.txt")


def test_exists_get_info_and_symlinks(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/target.txt", "t")
    sbx.commands.run(f"cd {workdir} && ln -s target.txt link && ln -s nowhere dangling && chmod 600 target.txt")
    assert sbx.files.exists(f"{workdir}/target.txt")
    assert sbx.files.exists(workdir)
    assert not sbx.files.exists(f"{workdir}/nothing")
    info = sbx.files.get_info(f"{workdir}/target.txt")
    assert (info.mode, info.permissions) == (0o600, "-rw-------")
    link = sbx.files.get_info(f"{workdir}/link")
    assert link.type == FileType.SYMLINK
    assert link.symlink_target == f"{workdir}/target.txt"
    assert link.permissions == "Lrwxrwxrwx"
    assert link.mode == 0o600  # the target's permissions, as envd reports
    assert sbx.files.get_info(workdir).type == FileType.DIR
    listed = {e.name: e for e in sbx.files.list(workdir)}
    assert listed["link"].type == FileType.SYMLINK
    assert listed["dangling"].type == FileType.SYMLINK
    assert sbx.files.read(f"{workdir}/link") == "t"


def test_make_dir(sbx: Sandbox, workdir: str) -> None:
    assert sbx.files.make_dir(f"{workdir}/a/b/c") is True
    assert sbx.files.make_dir(f"{workdir}/a/b/c") is False
    assert sbx.files.get_info(f"{workdir}/a/b/c").type == FileType.DIR
    assert sbx.commands.run(f"stat -c %U {workdir}/a {workdir}/a/b/c").stdout.split() == ["user", "user"]
    sbx.files.write(f"{workdir}/file", "f")
    with pytest.raises(InvalidArgumentException):
        sbx.files.make_dir(f"{workdir}/file")


def test_rename(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/old.txt", "content")
    info = sbx.files.rename(f"{workdir}/old.txt", f"{workdir}/moved/new.txt")
    assert (info.name, info.path, info.type) == ("new.txt", f"{workdir}/moved/new.txt", FileType.FILE)
    assert not sbx.files.exists(f"{workdir}/old.txt")
    assert sbx.files.read(f"{workdir}/moved/new.txt") == "content"
    sbx.files.make_dir(f"{workdir}/dir/inner")
    assert sbx.files.rename(f"{workdir}/dir", f"{workdir}/dir2").type == FileType.DIR
    assert sbx.files.exists(f"{workdir}/dir2/inner")
    with pytest.raises(FileNotFoundException):
        sbx.files.rename(f"{workdir}/absent", f"{workdir}/whatever")


def test_remove(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write_files([{"path": f"{workdir}/tree/x/y.txt", "data": "y"}, {"path": f"{workdir}/f.txt", "data": "f"}])
    sbx.files.remove(f"{workdir}/f.txt")
    assert not sbx.files.exists(f"{workdir}/f.txt")
    sbx.files.remove(f"{workdir}/tree")
    assert not sbx.files.exists(f"{workdir}/tree")
    sbx.files.remove(f"{workdir}/never-existed")  # envd removes like `rm -rf`: no error


# -- users and permissions -------------------------------------------------------------------------

def test_root_and_default_user_ownership(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/by-user.txt", "u")
    sbx.files.write("/root/by-root/r.txt", "r", user="root")
    assert sbx.files.get_info(f"{workdir}/by-user.txt").owner == "user"
    root_info = sbx.files.get_info("/root/by-root/r.txt", user="root")
    assert (root_info.owner, root_info.group) == ("root", "root")
    assert sbx.files.make_dir("/opt/made-by-root", user="root")
    assert sbx.files.get_info("/opt/made-by-root").owner == "root"
    # `~` is the acting user's home.
    assert sbx.files.write("~/home.txt", "h", user="root").path == "/root/home.txt"
    assert sbx.files.read("/root/by-root/r.txt", user="root") == "r"


def test_default_user_cannot_exceed_its_permissions(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write("/root/secret.txt", "top secret", user="root")
    with pytest.raises(SandboxException, match=r"(?i)permission denied"):
        sbx.files.read("/root/secret.txt")
    with pytest.raises(SandboxException, match=r"(?i)permission denied"):
        sbx.files.get_info("/root/secret.txt")
    with pytest.raises(SandboxException, match=r"(?i)permission denied"):
        sbx.files.make_dir("/opt/not-yours")
    with pytest.raises(SandboxException, match=r"(?i)permission denied"):
        sbx.files.remove("/etc/hostname")
    with pytest.raises(SandboxException, match=r"(?i)permission denied"):
        sbx.files.list("/root")
    big = b"\0" * (20 * 1024 * 1024)  # refused before its body is read: the answer must still arrive
    with pytest.raises(SandboxException, match=r"(?i)is a directory"):
        sbx.files.write("/etc", big)
    with pytest.raises(SandboxException, match=r"(?i)is a directory"):
        sbx.files.write("/etc", io.BytesIO(big))
    assert sbx.files.exists("/etc/hostname", user="root")
    # Group permissions count: a file of group `user`, mode 0640, owned by root, is readable.
    sbx.commands.run(f"echo shared > {workdir}/g.txt && chown root:user {workdir}/g.txt && chmod 640 {workdir}/g.txt",
                     user="root")
    assert sbx.files.read(f"{workdir}/g.txt") == "shared\n"


# -- watching --------------------------------------------------------------------------------------

def test_watch_dir_polling(sbx: Sandbox, workdir: str) -> None:
    handle = sbx.files.watch_dir(workdir)
    sbx.files.write(f"{workdir}/w.txt", "1")
    sbx.files.rename(f"{workdir}/w.txt", f"{workdir}/w2.txt")
    sbx.commands.run(f"chmod 600 {workdir}/w2.txt")
    sbx.files.remove(f"{workdir}/w2.txt")
    events = [(e.type, e.name) for e in handle.get_new_events()]
    assert (FilesystemEventType.CREATE, "w.txt") in events
    assert (FilesystemEventType.WRITE, "w.txt") in events
    assert (FilesystemEventType.RENAME, "w.txt") in events
    assert (FilesystemEventType.CREATE, "w2.txt") in events
    assert (FilesystemEventType.CHMOD, "w2.txt") in events
    assert (FilesystemEventType.REMOVE, "w2.txt") in events
    assert handle.get_new_events() == []  # each poll returns only what is new
    handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_watch_dir_recursive_with_entries(sbx: Sandbox, workdir: str) -> None:
    sbx.files.make_dir(f"{workdir}/existing")
    handle = sbx.files.watch_dir(workdir, recursive=True, include_entry=True)
    sbx.files.write(f"{workdir}/existing/a.txt", "a")
    sbx.files.make_dir(f"{workdir}/later")
    sbx.files.write(f"{workdir}/later/b.txt", "b")
    sbx.files.write(f"{workdir}/n1/n2/c.txt", "directories and file made at once")
    events = handle.get_new_events()
    handle.stop()
    names = {(e.type, e.name) for e in events}
    for created in ("n1", "n1/n2", "n1/n2/c.txt"):
        assert (FilesystemEventType.CREATE, created) in names
    assert (FilesystemEventType.CREATE, "existing/a.txt") in names
    assert (FilesystemEventType.CREATE, "later") in names
    assert (FilesystemEventType.CREATE, "later/b.txt") in names
    created = next(e for e in events if e.name == "later/b.txt" and e.type == FilesystemEventType.CREATE)
    assert created.entry is not None and created.entry.path == f"{workdir}/later/b.txt"


def test_watch_dir_non_recursive_ignores_subdirectories(sbx: Sandbox, workdir: str) -> None:
    sbx.files.make_dir(f"{workdir}/sub")
    handle = sbx.files.watch_dir(workdir)
    sbx.files.write(f"{workdir}/sub/inner.txt", "i")
    sbx.files.write(f"{workdir}/outer.txt", "o")
    names = {e.name for e in handle.get_new_events()}
    handle.stop()
    assert "outer.txt" in names
    assert not any(n.startswith("sub/") for n in names)


def test_watch_errors(sbx: Sandbox, workdir: str) -> None:
    with pytest.raises(FileNotFoundException):
        sbx.files.watch_dir(f"{workdir}/missing")
    sbx.files.write(f"{workdir}/plain.txt", "p")
    with pytest.raises(InvalidArgumentException):
        sbx.files.watch_dir(f"{workdir}/plain.txt")


# -- signed URLs -----------------------------------------------------------------------------------

def test_download_and_upload_urls(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/shared.txt", "via a signed URL")
    headers = _sandbox_headers(sbx)
    url = sbx.download_url(f"{workdir}/shared.txt")
    assert "signature=v1_" in url
    response = httpx.get(url, headers=headers)
    assert response.status_code == 200 and response.text == "via a signed URL"

    upload = sbx.upload_url(f"{workdir}/uploaded.txt", use_signature_expiration=60)
    assert "signature_expiration=" in upload
    response = httpx.post(upload, headers=headers, files={"file": ("ignored-name.txt", b"uploaded")})
    assert response.status_code == 200, response.text
    assert response.json()[0]["path"] == f"{workdir}/uploaded.txt"
    assert sbx.files.read(f"{workdir}/uploaded.txt") == "uploaded"

    raw = sbx.upload_url(f"{workdir}/raw.bin", user="root")
    response = httpx.post(raw, headers={**headers, "Content-Type": "application/octet-stream"}, content=b"raw")
    assert response.status_code == 200, response.text
    assert sbx.files.get_info(f"{workdir}/raw.bin").owner == "root"


def test_signed_url_rejections(sbx: Sandbox, workdir: str) -> None:
    sbx.files.write(f"{workdir}/guarded.txt", "guarded")
    headers = _sandbox_headers(sbx)
    expired = sbx.download_url(f"{workdir}/guarded.txt", use_signature_expiration=-5)
    response = httpx.get(expired, headers=headers)
    assert response.status_code == 401 and "expired" in response.json()["message"]

    good = sbx.download_url(f"{workdir}/guarded.txt")
    tampered = good.replace("signature=v1_", "signature=v1_X")
    assert httpx.get(tampered, headers=headers).status_code == 401
    # A signature is bound to its path and operation.
    other_path = good.replace("guarded.txt", "other.txt")
    assert httpx.get(other_path, headers=headers).status_code == 401
    assert httpx.post(good, headers=headers, files={"file": ("x", b"x")}).status_code == 401  # signed for reading
    unsigned = good.split("&signature=")[0]
    response = httpx.get(unsigned, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == 401
    wrong_token = httpx.get(unsigned, headers={**headers, "X-Access-Token": "not-the-token"})
    assert wrong_token.status_code == 401


def test_raw_multipart_keeps_directories_and_rejects_duplicates(e2b_server, sbx: Sandbox, workdir: str) -> None:
    headers = {**_sandbox_headers(sbx), "X-Access-Token": sbx._envd_access_token}
    url = e2b_server.url + "/files"
    files = [("file", (f"{workdir}/m/one.txt", b"1")), ("file", (f"{workdir}/m/two.txt", b"2")),
             ("other", ("ignored", b"-"))]
    response = httpx.post(url, headers=headers, files=files)
    assert response.status_code == 200, response.text
    assert [item["name"] for item in response.json()] == ["one.txt", "two.txt"]
    assert sbx.files.read(f"{workdir}/m/two.txt") == "2"
    dup = [("file", (f"{workdir}/dup.txt", b"1")), ("file", (f"{workdir}/dup.txt", b"2"))]
    response = httpx.post(url, headers=headers, files=dup)
    assert response.status_code == 400
    body = gzip.compress(b"gzipped raw body")
    response = httpx.post(url, params={"path": f"{workdir}/gz.bin"}, content=body,
                          headers={**headers, "Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert sbx.files.read(f"{workdir}/gz.bin") == "gzipped raw body"
    response = httpx.post(url, params={"path": f"{workdir}/x.bin", "username": "nobody-here"}, content=b"x",
                          headers={**headers, "Content-Type": "application/octet-stream"})
    assert response.status_code == 401


# -- the sandbox's own view ------------------------------------------------------------------------

@pytest.fixture
def host_file() -> Iterator[str]:
    """A file on the host, with a unique name, that no sandbox may read or change."""
    path = f"/tmp/e2b-local-host-{uuid.uuid4().hex}"
    with open(path, "w") as f:
        f.write("HOST SECRET")
    yield path
    os.unlink(path)


def test_symlink_to_a_host_path_stays_inside_the_sandbox(sbx: Sandbox, host_file: str) -> None:
    sbx.commands.run(f"ln -sfn {host_file} /home/user/escape", user="root")
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/home/user/escape", user="root")
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/home/user/escape")

    # Writing through the link creates the sandbox's own file; the host's stays untouched.
    sbx.files.write("/home/user/escape", "written in the sandbox", user="root")
    assert sbx.files.read("/home/user/escape") == "written in the sandbox"
    assert sbx.commands.run(f"cat {host_file}").stdout == "written in the sandbox"
    with open(host_file) as f:
        assert f.read() == "HOST SECRET"


def test_symlinked_directory_to_a_host_path_stays_inside_the_sandbox(sbx: Sandbox, host_file: str) -> None:
    host_dir = os.path.dirname(host_file)
    sbx.commands.run(f"ln -sfn {host_dir} /home/user/escape-dir", user="root")
    name = os.path.basename(host_file)
    with pytest.raises(FileNotFoundException):
        sbx.files.read(f"/home/user/escape-dir/{name}", user="root")
    assert name not in [e.name for e in sbx.files.list("/home/user/escape-dir", user="root")]
    sbx.files.write(f"/home/user/escape-dir/{name}", "sandbox copy", user="root")
    with open(host_file) as f:
        assert f.read() == "HOST SECRET"
    sbx.files.remove(f"/home/user/escape-dir/{name}", user="root")
    assert os.path.exists(host_file)


def test_symlink_to_etc_reads_the_sandbox_file(sbx: Sandbox) -> None:
    sbx.commands.run("echo sandbox-only > /tmp/own.txt && ln -sfn /tmp/own.txt /home/user/own-link", user="root")
    assert sbx.files.read("/home/user/own-link") == "sandbox-only\n"
    sbx.commands.run("ln -sfn /etc/passwd /home/user/passwd-link")
    assert sbx.files.read("/home/user/passwd-link") == sbx.commands.run("cat /etc/passwd").stdout


def test_filesystem_rpcs_require_the_access_token(e2b_server, sbx: Sandbox) -> None:
    url = e2b_server.url + "/filesystem.Filesystem/Stat"
    headers = {**_sandbox_headers(sbx), "Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    response = httpx.post(url, headers=headers, json={"path": "/etc/hostname"})
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
    response = httpx.post(url, headers={**headers, "X-Access-Token": sbx._envd_access_token},
                          json={"path": "/etc/hostname"})
    assert response.status_code == 200 and response.json()["entry"]["type"] == "FILE_TYPE_FILE"
