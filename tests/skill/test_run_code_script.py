"""scripts/run_code.py end to end: a real code-interpreter sandbox on e2b-local, found without a key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOTFS_CACHE
from e2b import Sandbox

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_code.py"
# Printed by the BIG snippet below, to exercise clipping.
BIG_OUTPUT_CHARS = 50_000


@pytest.fixture
def runner(e2b_server, tmp_path: Path):
    """Run run_code.py with no E2B_API_KEY: it must find the running e2b-local by its data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_LOCAL_HOME=str(e2b_server.home), E2B_LOCAL_ROOTFS=ROOTFS_CACHE)

    def run(*args: str, stdin: str | None = None) -> tuple[int, dict | None, str]:
        proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, input=stdin, timeout=300)
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr

    run.cwd = tmp_path  # type: ignore[attr-defined]
    return run


def alive(sandbox_id: str) -> bool:
    return Sandbox.get_info(sandbox_id) is not None if sandbox_id in {
        s.sandbox_id for s in Sandbox.list().next_items()} else False


def test_prints_json_and_kills_the_sandbox(runner) -> None:
    code, out, err = runner("--code", "print(6*7)")
    assert code == 0, err
    assert out["stdout"] == "42\n" and out["error"] is None
    assert out["backend"] == "local" and out["kept"] is False and out["language"] == "python"
    assert "e2b-local" in err
    assert not alive(out["sandbox_id"])


def test_code_from_stdin_and_file(runner) -> None:
    assert runner(stdin="print(3*5)")[1]["stdout"] == "15\n"
    (runner.cwd / "job.py").write_text("x = 2\nx ** 10")
    code, out, _ = runner("--file", "job.py")
    assert code == 0 and out["text"] == "1024"


def test_an_exception_exits_1_with_the_error(runner) -> None:
    code, out, err = runner("--code", "import sys\nprint('about to fail', file=sys.stderr)\nraise ValueError('bad')")
    assert code == 1
    assert out["error"]["name"] == "ValueError" and out["error"]["value"] == "bad"
    assert out["stderr"] == "about to fail\n"
    assert "Traceback" not in err


def test_images_are_written_to_files(runner) -> None:
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n'done'"
    code, out, err = runner("--code", plot, "--output-dir", "plots")
    assert code == 0, err
    assert out["text"] == "done"  # the server strips a string's quotes, as E2B's does
    image = next(r for r in out["results"] if "png" in r.get("files", {}))
    assert (runner.cwd / image["files"]["png"]).read_bytes().startswith(b"\x89PNG")
    assert "png" not in image and image["is_main_result"] is False


SAVEFIG_ONLY = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.savefig('chart.png')"


def test_savefig_and_download_yield_exactly_the_requested_file(runner) -> None:
    code, out, err = runner("--code", SAVEFIG_ONLY, "--download", "/home/user/chart.png:chart.png")
    assert code == 0, err
    assert sorted(p.name for p in runner.cwd.iterdir()) == ["chart.png"]
    assert (runner.cwd / "chart.png").read_bytes().startswith(b"\x89PNG")
    # The figure is displayed too (as on E2B): its copy goes to a temporary folder that stderr names.
    copies = [Path(f) for r in out["results"] for f in r.get("files", {}).values()]
    assert copies and all(runner.cwd not in p.parents for p in copies)
    folder = copies[0].parent
    assert f"to {folder}" in err and "--no-images" in err
    shutil.rmtree(folder)


def test_no_images_writes_no_image_files(runner) -> None:
    code, out, err = runner("--code", SAVEFIG_ONLY, "--no-images", "--download", "/home/user/chart.png:c.png")
    assert code == 0, err
    assert sorted(p.name for p in runner.cwd.iterdir()) == ["c.png"]
    assert out["results"] and all("files" not in r and "png" in r["formats"] for r in out["results"])
    assert "result file" not in err


def test_long_output_is_clipped_with_a_count(runner) -> None:
    code, out, _ = runner("--code", f"print('x' * {BIG_OUTPUT_CHARS - 1})", "--max-output", "1000")
    assert code == 0
    assert out["truncated"]["stdout"] == BIG_OUTPUT_CHARS - 1000
    assert len(out["stdout"]) < 1100


def test_env_and_languages(runner) -> None:
    code, out, _ = runner("--code", "import os; print(os.environ['A'], os.environ['B'])", "--env", "A=1",
                          "--env", "B=two")
    assert code == 0 and out["stdout"] == "1 two\n"
    code, out, _ = runner("--code", "console.log(6 * 7)", "--language", "javascript")
    assert code == 0 and out["stdout"] == "42\n" and out["language"] == "javascript"
    code, out, _ = runner("--code", "echo $((6 * 7))", "--language", "bash")
    assert code == 0 and out["stdout"] == "42\n"


def test_upload_then_download(runner) -> None:
    (runner.cwd / "in.csv").write_text("a,b\n1,2\n")
    code, out, err = runner("--code", "open('/home/user/in.csv').read().count(',')",
                            "--upload", "in.csv:/home/user/in.csv", "--download", "/home/user/in.csv:copies/out.csv")
    assert code == 0, err
    assert out["text"] == "2"
    assert out["uploaded"] == [{"local": "in.csv", "remote": "/home/user/in.csv"}]
    assert (runner.cwd / "copies" / "out.csv").read_text() == "a,b\n1,2\n"
    assert out["downloaded"][0]["bytes"] == 8


def test_missing_download_exits_4_but_still_reports(runner) -> None:
    code, out, _ = runner("--code", "'ok'", "--download", "/home/user/nothing.txt:x.txt")
    assert code == 4
    assert out["downloaded"][0]["error"].startswith("file not found")
    assert out["text"] == "ok"


def test_keep_and_reuse(runner) -> None:
    code, out, err = runner("--code", "counter = 41", "--keep")
    assert code == 0 and out["kept"] is True and "left running" in err
    sandbox_id = out["sandbox_id"]
    try:
        code, out, err = runner("--code", "counter + 1", "--sandbox-id", sandbox_id)
        assert code == 0, err
        assert out["text"] == "42" and out["sandbox_id"] == sandbox_id
        assert alive(sandbox_id), "a reused sandbox must not be killed"
    finally:
        Sandbox.kill(sandbox_id)


def test_unknown_sandbox_id_exits_4(runner) -> None:
    code, out, err = runner("--code", "1", "--sandbox-id", "doesnotexist00000000")
    assert code == 4 and out is None
    assert "fix:" in err and "Traceback" not in err


def test_timeout_exits_5(runner) -> None:
    code, _, err = runner("--code", "import time; time.sleep(30)", "--timeout", "2")
    assert code == 5 and "Traceback" not in err
