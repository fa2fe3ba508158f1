"""The languages the code interpreter runs, the kernel behind each, and per-language code snippets.

E2B names a context's language with the Jupyter kernel it runs (`python`, `javascript`, ...) and
accepts a few aliases. Here Python runs on ipykernel, JavaScript and TypeScript on Deno's kernel
(Deno treats both the same way; each language still gets its own default context, as on E2B),
Bash on e2b-local's own Bash kernel, R on IRkernel and Java on JJava (the maintained successor of
IJava, E2B's Java kernel). The kernel specs themselves are files of the code-interpreter
root filesystem (written by `e2b_local.isolation.rootfs`), read when a kernel starts.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from e2b_local.protocol import KERNELSPECS_DIR

# Where the code-interpreter template installs its kernel specs (Jupyter's system-wide data path).
KERNELS_DIR = Path(KERNELSPECS_DIR)
# The language of a request that names none (E2B's default).
DEFAULT_LANGUAGE = "python"
# Other names for the languages: E2B's own (js, ts) and a few obvious ones.
ALIASES = {"js": "javascript", "ts": "typescript", "py": "python", "python3": "python", "sh": "bash"}
# A name Bash accepts for a variable; others cannot be exported from a shell.
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class UnsupportedLanguageError(ValueError):
    """A context was requested for a language e2b-local has no kernel for."""

    def __init__(self, language: str) -> None:
        supported = ", ".join(
            name + "".join(f" ({alias})" for alias, target in ALIASES.items() if target == name and len(alias) == 2)
            for name in LANGUAGES
        )
        super().__init__(f"language '{language}' is not supported by e2b-local; supported languages: {supported}")


class KernelNotInstalledError(RuntimeError):
    """The sandbox's root filesystem has no kernel spec for a language (e.g. the `base` template)."""


def _python_env(assign: dict[str, str], remove: list[str]) -> str:
    # One expression statement: it binds no name in the user's namespace, and silent runs display nothing.
    return f"(lambda e: (e.update({assign!r}), [e.pop(k, None) for k in {remove!r}]))(__import__('os').environ)"


def _deno_env(assign: dict[str, str], remove: list[str]) -> str:
    lines = [f"Deno.env.set({json.dumps(k)}, {json.dumps(v)});" for k, v in assign.items()]
    lines += [f"Deno.env.delete({json.dumps(k)});" for k in remove]
    return "\n".join([*lines, "void 0;"])


def _bash_env(assign: dict[str, str], remove: list[str]) -> str:
    lines = [f"export {k}={shlex.quote(v)}" for k, v in assign.items() if _SHELL_NAME.match(k)]
    lines += [f"unset {k}" for k in remove if _SHELL_NAME.match(k)]
    return "\n".join(lines) or ":"


def _quoted(value: str) -> str:
    # A double-quoted literal that R and Java read as JSON does: both know the escapes JSON uses
    # (\" \\ \n \t \uXXXX for other control characters), and other characters stay as they are.
    return json.dumps(value, ensure_ascii=False)


def _r_env(assign: dict[str, str], remove: list[str]) -> str:
    lines = []
    if assign:
        lines.append("invisible(Sys.setenv(" + ", ".join(f"{_quoted(k)} = {_quoted(v)}" for k, v in assign.items())
                     + "))")
    if remove:
        lines.append("invisible(Sys.unsetenv(c(" + ", ".join(_quoted(k) for k in remove) + ")))")
    return "\n".join(lines) or "invisible(NULL)"


def _java_env(assign: dict[str, str], remove: list[str]) -> str:
    # A JVM cannot change its own environment: E2B's server sets system properties instead
    # (System.getProperty sees a request's env vars). One block statement leaves no `$n` variable.
    lines = [f"System.setProperty({_quoted(k)}, {_quoted(v)});" for k, v in assign.items()]
    lines += [f"System.clearProperty({_quoted(k)});" for k in remove]
    return "{\n" + "".join(line + "\n" for line in lines) + "}"


def _deno_fence(token: str) -> str:
    return f"console.log({json.dumps(token)})"


@dataclass(frozen=True)
class Language:
    """One language the interpreter offers."""

    name: str
    kernel: str
    # "ipc" (Unix socket files) where the kernel supports it; Deno's kernel only speaks TCP.
    transport: str
    env_code: Callable[[dict[str, str], list[str]], str]
    # The quote character E2B strips from a plain-text result that is one quoted string
    # (E2B strips Python's single quotes; Deno quotes strings with double ones).
    result_quote: str = "'"
    # Code that prints its argument through the same path as the user's output, for kernels whose
    # output may still be on its way when they report idle (Deno forwards console output from a
    # separate task): once the printed token arrives, everything printed before it has arrived too.
    fence: Callable[[str], str] | None = None
    # False where the code reads env vars from somewhere the kernel's process environment does not
    # fill (Java's system properties): the sandbox's env vars are then set by env_code, like a
    # request's, before the first execution.
    process_env: bool = True
    # How long the kernel may take to answer at its start, when longer than the usual (a JVM with
    # JShell, or R loading IRkernel, on a busy machine).
    start_timeout: float | None = None


LANGUAGES: dict[str, Language] = {
    "python": Language("python", "python3", "ipc", _python_env),
    "javascript": Language("javascript", "deno", "tcp", _deno_env, result_quote='"', fence=_deno_fence),
    "typescript": Language("typescript", "deno", "tcp", _deno_env, result_quote='"', fence=_deno_fence),
    "bash": Language("bash", "bash", "ipc", _bash_env),
    # IRkernel and JJava only speak TCP.
    "r": Language("r", "r", "tcp", _r_env, start_timeout=180.0),
    "java": Language("java", "java", "tcp", _java_env, process_env=False, start_timeout=180.0),
}


def normalize(language: str | None) -> str:
    """E2B's normalisation: empty is Python, case and surrounding blanks do not matter, aliases map."""
    if not language or not language.strip():
        return DEFAULT_LANGUAGE
    name = language.strip().lower()
    return ALIASES.get(name, name)


def get_language(language: str | None) -> Language:
    """The language named by a request; raises UnsupportedLanguageError for the others."""
    name = normalize(language)
    found = LANGUAGES.get(name)
    if found is None:
        raise UnsupportedLanguageError(language or "")
    return found


@dataclass(frozen=True)
class KernelSpec:
    """The parts of a Jupyter kernel spec (kernel.json) the interpreter uses."""

    name: str
    argv: list[str]
    env: dict[str, str]
    # "signal": SIGINT to the kernel's process group; "message": an interrupt_request on the control channel.
    interrupt_mode: str

    @classmethod
    def load(cls, name: str, directory: Path = KERNELS_DIR) -> KernelSpec:
        """Read `<directory>/<name>/kernel.json`."""
        path = directory / name / "kernel.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise KernelNotInstalledError(
                f"the '{name}' kernel is not installed in this sandbox (use the code-interpreter-v1 template)"
            ) from None
        return cls(name, list(data["argv"]), dict(data.get("env") or {}), data.get("interrupt_mode", "signal"))
