"""The code interpreter's pure parts: Jupyter messages as E2B's NDJSON lines, and the language table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2b_local.interpreter.languages import (
    KernelNotInstalledError,
    KernelSpec,
    UnsupportedLanguageError,
    get_language,
    normalize,
)
from e2b_local.interpreter.outputs import Translator, encode, error_line, result_line

MSG = "request-1"
DATE = "2026-01-02T03:04:05.000001Z"


def _msg(kind: str, content: dict[str, Any], parent: str = MSG) -> dict[str, Any]:
    return {"msg_type": kind, "content": content, "parent_header": {"msg_id": parent}, "header": {"date": DATE}}


def test_an_execution_translated_line_by_line() -> None:
    t = Translator(MSG)
    messages = [
        _msg("status", {"execution_state": "busy"}),
        _msg("execute_input", {"execution_count": 3}),
        _msg("stream", {"name": "stdout", "text": "hi\n"}),
        _msg("stream", {"name": "stderr", "text": "warn\n"}),
        _msg("display_data", {"data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}),
        _msg("execute_result", {"data": {"text/plain": "'abc'", "application/x-custom": {"a": 1}}}),
    ]
    lines = [t.line(m) for m in messages]
    assert lines == [
        None,
        {"type": "number_of_executions", "execution_count": 3},
        {"type": "stdout", "text": "hi\n", "timestamp": DATE},
        {"type": "stderr", "text": "warn\n", "timestamp": DATE},
        {"type": "result", "png": "iVBOR", "text": "<Figure>", "is_main_result": False, "extra": {}},
        {"type": "result", "text": "abc", "is_main_result": True, "extra": {"application/x-custom": {"a": 1}}},
    ]
    assert not t.finished
    assert t.line(_msg("status", {"execution_state": "idle"})) is None
    assert t.finished


def test_only_the_first_error_counts() -> None:
    t = Translator(MSG)
    first = t.line(_msg("error", {"ename": "ValueError", "evalue": "bad", "traceback": ["line 1\n", "line 2"]}))
    assert first == {"type": "error", "name": "ValueError", "value": "bad", "traceback": "line 1\nline 2"}
    assert t.line(_msg("error", {"ename": "KeyError", "evalue": "x", "traceback": []})) is None
    assert t.errored


def test_messages_of_other_requests_and_other_streams_are_dropped() -> None:
    t = Translator(MSG)
    assert t.line(_msg("stream", {"name": "stdout", "text": "x"}, parent="other")) is None
    assert t.line(_msg("stream", {"name": "other", "text": "x"})) is None
    assert t.line(_msg("status", {"execution_state": "idle"}, parent="other")) is None
    assert not t.idle


def test_late_output_behind_a_fence_belongs_to_the_request() -> None:
    t = Translator(MSG, quote='"')
    t.fence_token = "FENCE-123"
    assert t.line(_msg("status", {"execution_state": "idle"})) is None
    assert t.idle and not t.finished
    # Deno labels late console output with the fence request.
    late = t.line(_msg("stream", {"name": "stdout", "text": "late\nFENCE-123\n"}, parent="fence"))
    assert late == {"type": "stdout", "text": "late\n", "timestamp": DATE}
    assert t.finished
    assert t.line(_msg("execute_result", {"data": {"text/plain": '"s"'}}, parent="fence")) == {
        "type": "result", "text": "s", "is_main_result": True, "extra": {}}
    # The fence's own token alone yields no line.
    assert t.line(_msg("stream", {"name": "stdout", "text": "FENCE-123"}, parent="fence")) is None


def test_a_translator_without_fence_ignores_foreign_output() -> None:
    t = Translator(MSG)
    assert t.line(_msg("execute_result", {"data": {"text/plain": "1"}}, parent="fence")) is None


@pytest.mark.parametrize(("text", "quote", "shown"), [
    ("'abc'", "'", "abc"),
    ('"abc"', "'", '"abc"'),
    ('"abc"', '"', "abc"),
    ("'", "'", "'"),
    ("''", "'", ""),
    ("42", "'", "42"),
])
def test_quotes_of_a_string_result(text: str, quote: str, shown: str) -> None:
    assert result_line({"text/plain": text}, True, quote)["text"] == shown


def test_known_mime_types_get_their_keys() -> None:
    bundle = {"text/html": "<b>", "text/markdown": "*", "image/svg+xml": "<svg/>", "image/jpeg": "j",
              "application/pdf": "p", "text/latex": "$x$", "application/json": {"a": 1},
              "application/javascript": "js", "e2b/data": {"d": 1}, "e2b/chart": {"c": 1}}
    line = result_line(bundle, False, "'")
    assert {k: v for k, v in line.items() if k not in ("type", "is_main_result", "extra")} == {
        "html": "<b>", "markdown": "*", "svg": "<svg/>", "jpeg": "j", "pdf": "p", "latex": "$x$",
        "json": {"a": 1}, "javascript": "js", "data": {"d": 1}, "chart": {"c": 1}}
    assert line["extra"] == {}


def test_a_message_without_a_date_gets_the_current_time() -> None:
    msg = _msg("stream", {"name": "stdout", "text": "x"})
    msg["header"] = {}
    stamp = Translator(MSG).line(msg)["timestamp"]  # type: ignore[index]
    assert stamp.endswith("Z") and "T" in stamp


def test_ndjson_encoding() -> None:
    body = encode([error_line("E", "v"), {"type": "stdout", "text": "a\nb"}])
    assert body == b'{"type":"error","name":"E","value":"v","traceback":""}\n{"type":"stdout","text":"a\\nb"}\n'
    assert encode([]) == b""


@pytest.mark.parametrize(("requested", "name"), [
    (None, "python"), ("", "python"), ("  ", "python"), ("Python", "python"), (" py ", "python"),
    ("python3", "python"), ("js", "javascript"), ("TS", "typescript"), ("sh", "bash"), ("r", "r"),
])
def test_language_names_normalise_like_e2b(requested: str | None, name: str) -> None:
    assert normalize(requested) == name


def test_languages_and_their_kernels() -> None:
    assert (get_language("js").kernel, get_language("js").transport) == ("deno", "tcp")
    assert get_language("ts").result_quote == '"'
    assert get_language(None).kernel == "python3"
    assert get_language("bash").fence is None
    assert (get_language("R").kernel, get_language("r").transport) == ("r", "tcp")
    assert (get_language(" Java ").kernel, get_language("java").transport) == ("java", "tcp")


def test_an_unsupported_language_names_the_supported_ones() -> None:
    with pytest.raises(UnsupportedLanguageError) as caught:
        get_language("cobol")
    assert str(caught.value) == ("language 'cobol' is not supported by e2b-local; supported languages: "
                                 "python (py), javascript (js), typescript (ts), bash (sh), r, java")


def _environment_after(command: list[str]) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GONE": "1"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


ASSIGN = {"NEW": "it's \"quoted\" $HOME\nline", "EMPTY": ""}


def test_python_env_code_sets_and_removes_variables() -> None:
    code = get_language("python").env_code(ASSIGN, ["GONE", "NEVER_SET"])
    env = _environment_after([sys.executable, "-c", f"{code}\nimport os, json; print(json.dumps(dict(os.environ)))"])
    assert env["NEW"] == ASSIGN["NEW"] and env["EMPTY"] == ""
    assert "GONE" not in env


def test_bash_env_code_quotes_values_and_skips_names_bash_cannot_export() -> None:
    code = get_language("bash").env_code({**ASSIGN, "BAD-NAME": "x"}, ["GONE", "ALSO-BAD"])
    assert "BAD-NAME" not in code and "ALSO-BAD" not in code
    dump = f'{sys.executable} -c "import os, json; print(json.dumps(dict(os.environ)))"'
    env = _environment_after(["bash", "-c", f"{code}\n{dump}"])
    assert env["NEW"] == ASSIGN["NEW"] and env["EMPTY"] == ""
    assert "GONE" not in env
    assert get_language("bash").env_code({}, []) == ":"


def test_deno_env_code_is_json_quoted() -> None:
    code = get_language("javascript").env_code({"A": 'x"y'}, ["B"])
    assert code.splitlines() == ['Deno.env.set("A", "x\\"y");', 'Deno.env.delete("B");', "void 0;"]


def test_r_env_code_quotes_like_json() -> None:
    code = get_language("r").env_code({"A": 'x"y\\', "B C": "\u00e9"}, ["D", "E"])
    assert code.splitlines() == ['invisible(Sys.setenv("A" = "x\\"y\\\\", "B C" = "\u00e9"))',
                                 'invisible(Sys.unsetenv(c("D", "E")))']
    assert get_language("r").env_code({}, []) == "invisible(NULL)"


def test_java_env_code_sets_properties_in_one_block() -> None:
    code = get_language("java").env_code({"A": 'x"y\n'}, ["B"])
    assert code.splitlines() == ["{", 'System.setProperty("A", "x\\"y\\n");', 'System.clearProperty("B");', "}"]


def test_kernel_specs_are_read_from_their_directory(tmp_path: Path) -> None:
    (tmp_path / "python3").mkdir()
    (tmp_path / "python3" / "kernel.json").write_text(json.dumps(
        {"argv": ["python3", "-m", "ipykernel", "-f", "{connection_file}"], "env": {"A": "1"},
         "interrupt_mode": "message"}))
    spec = KernelSpec.load("python3", tmp_path)
    assert spec == KernelSpec("python3", ["python3", "-m", "ipykernel", "-f", "{connection_file}"], {"A": "1"},
                              "message")
    (tmp_path / "bash").mkdir()
    (tmp_path / "bash" / "kernel.json").write_text(json.dumps({"argv": ["bash-kernel"]}))
    assert KernelSpec.load("bash", tmp_path) == KernelSpec("bash", ["bash-kernel"], {}, "signal")


def test_a_missing_kernel_points_at_the_code_interpreter_template(tmp_path: Path) -> None:
    with pytest.raises(KernelNotInstalledError, match="use the code-interpreter-v1 template"):
        KernelSpec.load("deno", tmp_path)
