"""The code under test: it runs untrusted-ish work in E2B sandboxes."""

from __future__ import annotations

from e2b import AsyncSandbox, Sandbox
from e2b_code_interpreter import Sandbox as CodeInterpreter


def count_words(sandbox: Sandbox, path: str, text: str) -> int:
    """Write `text` to `path` in `sandbox` and count its words with `wc`."""
    sandbox.files.write(path, text)
    return int(sandbox.commands.run(f"wc -w < {path}").stdout.strip())


def mean_in_sandbox(numbers: list[float]) -> float:
    """Compute the mean of `numbers` with pandas in a code interpreter sandbox of its own."""
    with CodeInterpreter.create(metadata={"job": "mean"}) as sandbox:
        execution = sandbox.run_code(f"import pandas as pd\nfloat(pd.Series({numbers!r}).mean())")
        if execution.error:
            raise RuntimeError(execution.error.value)
        return float(execution.text)


async def uname(sandbox: AsyncSandbox) -> str:
    """The kernel name the sandbox reports."""
    return (await sandbox.commands.run("uname -s")).stdout.strip()
