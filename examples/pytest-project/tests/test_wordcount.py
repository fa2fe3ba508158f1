"""Tests of wordcount.py: the sandboxes come from e2b-local's pytest plugin, nothing else is needed."""

import pytest
from wordcount import count_words, mean_in_sandbox, uname


def test_count_words(e2b_sandbox):
    assert count_words(e2b_sandbox, "/tmp/text.txt", "one two three\nfour") == 4


@pytest.mark.e2b(template="code-interpreter-v1")
def test_code_interpreter_sandbox(e2b_sandbox):
    assert e2b_sandbox.run_code("6 * 7").text == "42"


def test_mean_creates_and_kills_its_own_sandbox(e2b_session):
    assert mean_in_sandbox([1, 2, 3, 6]) == 3.0


@pytest.mark.asyncio
async def test_uname(e2b_async_sandbox):
    assert await uname(e2b_async_sandbox) == "Linux"
