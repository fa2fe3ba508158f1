#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0", "python-dotenv>=1.0", "anthropic>=0.70"]
# ///
"""Let Claude answer a prompt by running code in an E2B sandbox: a tool-use loop with the anthropic SDK.

Claude gets five tools bound to one code-interpreter sandbox (run_code, run_command, write_file,
read_file, list_files). Each tool call runs in the sandbox and its outcome goes back as a tool_result
(stdout, stderr, the value, the error; charts as images), until Claude ends its turn. The final answer
goes to stdout; progress, tool calls and their outcome to stderr. The sandbox is created on the first
tool call and killed at the end unless --keep; a sandbox passed with --sandbox-id is never killed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from sandbox_backend import (
    EXIT_BACKEND,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    ScriptError,
    add_backend_args,
    clip,
    emit_json,
    fail,
    load_env_file,
    log,
    make_parser,
    run_main,
)
from sandbox_tools import (
    Limits,
    SandboxSession,
    add_limit_args,
    describe_call,
    execute,
    tool_definitions,
)

# The model when neither --model nor ANTHROPIC_MODEL says otherwise: a current Sonnet, the usual
# balance of skill, speed and price for tool use. Change it here when it is retired.
DEFAULT_MODEL = "claude-sonnet-5"
# Environment variable that overrides DEFAULT_MODEL (the name Anthropic's own tools read).
MODEL_ENV = "ANTHROPIC_MODEL"
# Model calls per run: enough for a multi-step analysis, and a stop for a model that loops.
DEFAULT_MAX_TURNS = 20
# Output tokens per model call: room for long code in a tool call; well within the non-streaming limit.
DEFAULT_MAX_TOKENS = 8192
# Lifetime of a new sandbox (seconds): outlasts a long run, and bounds a sandbox left behind if this
# process is killed before it can clean up.
DEFAULT_SANDBOX_TIMEOUT_S = 1800
# Where API keys are made; printed in the fix for a missing or rejected key.
ANTHROPIC_KEYS_URL = "https://console.anthropic.com/settings/keys"
# Tag on sandboxes this script creates, so `lifecycle.py list --metadata created-by=claude_agent` finds them.
SANDBOX_METADATA = {"created-by": "claude_agent"}

# The default system prompt (--system replaces it): tells the model what the tools give it.
SYSTEM_PROMPT = """You have a Linux sandbox (an E2B sandbox) to work in, through tools. Use it to compute, \
check and inspect instead of guessing: run code, run shell commands, read and write files. The sandbox \
is yours alone and disposable; its working directory is /home/user. Interpreter state persists between \
run_code calls. When you are done, answer the user directly and concisely."""

EPILOG = f"""examples:
  python scripts/claude_agent.py "What is the 30th Fibonacci number? Compute it."
  python scripts/claude_agent.py --json "Plot sin(x) and describe the chart" > run.json
  echo "How many primes are below 10**6?" | python scripts/claude_agent.py
  python scripts/claude_agent.py --sandbox-id SANDBOX_ID "Summarise /home/user/data.csv"
  python scripts/claude_agent.py --keep --model claude-opus-5 "Set up a Flask app on port 8000"
  python scripts/claude_agent.py --print-tools     # the tool definitions as JSON, for your own loop

environment:
  ANTHROPIC_API_KEY   required (environment or .env; keys: {ANTHROPIC_KEYS_URL})
  {MODEL_ENV}     model when --model is not given (default {DEFAULT_MODEL})
  ANTHROPIC_BASE_URL  another Messages API endpoint (a proxy or gateway)
  E2B_API_KEY         E2B cloud; without it the sandbox runs on e2b-local (see --local / --cloud)

output:
  stdout: the final answer (text). With --json: answer, stop_reason, turns, tool_calls[] (turn, name,
  input, is_error, summary), model, sandbox_id, backend, kept, usage {{input_tokens, output_tokens}}.
  stderr: the backend, the sandbox, each tool call and its outcome, streamed model text.

{EXIT_CODES_HELP}
  (1 here: the model stopped without finishing (max_tokens or a refusal);
   3 also: ANTHROPIC_API_KEY missing or rejected; 5 also: --max-turns reached)"""


def parse_args(argv: Sequence[str] | None) -> Any:
    """Parse the command line."""
    parser = make_parser(__doc__, EPILOG)
    parser.add_argument("prompt", nargs="?", help="the task for Claude (default: read from stdin)")
    parser.add_argument(
        "--model", help=f"the Claude model (default: ${MODEL_ENV} or {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--max-turns",
        type=int,
        default=DEFAULT_MAX_TURNS,
        metavar="N",
        help=f"stop after N model calls (default {DEFAULT_MAX_TURNS}); tools asked for in call N are not run",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        metavar="N",
        help=f"output tokens per model call (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument("--system", help="replace the default system prompt")
    parser.add_argument("--sandbox-id", help="work in this sandbox (it is never killed by this script)")
    parser.add_argument("--keep", action="store_true", help="leave the new sandbox running afterwards")
    parser.add_argument(
        "--sandbox-timeout",
        type=int,
        default=DEFAULT_SANDBOX_TIMEOUT_S,
        metavar="SECONDS",
        help=f"lifetime of the sandbox from its creation (default {DEFAULT_SANDBOX_TIMEOUT_S}); "
        "with --sandbox-id, extends it",
    )
    add_limit_args(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of the bare answer")
    parser.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="wait for each whole response instead of streaming it (streamed text is echoed to stderr)",
    )
    parser.add_argument(
        "--print-tools", action="store_true", help="print the tool definitions as JSON and exit (no key needed)"
    )
    add_backend_args(parser)
    return parser.parse_args(argv)


def read_prompt(args: Any) -> str:
    """The prompt from the command line or stdin."""
    if args.prompt is not None:
        prompt = args.prompt
    elif not sys.stdin.isatty():
        prompt = sys.stdin.read()
    else:
        fail("no prompt given", fix='pass it as an argument: python scripts/claude_agent.py "PROMPT", or on stdin')
    if not prompt.strip():
        fail("the prompt is empty", fix="say what Claude should do")
    return prompt


def anthropic_error(exc: Exception) -> ScriptError:
    """Turn an anthropic SDK exception into one clear error line with a fix."""
    import anthropic

    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    detail = body.get("error", {}).get("message") if isinstance(body, dict) else None
    detail = detail or str(exc).strip().splitlines()[0]
    if isinstance(exc, anthropic.AuthenticationError):
        return ScriptError(
            f"the Anthropic API rejected the API key (401: {detail})",
            fix=f"set a valid ANTHROPIC_API_KEY in the environment or .env (keys: {ANTHROPIC_KEYS_URL})",
            code=EXIT_BACKEND,
        )
    if isinstance(exc, anthropic.PermissionDeniedError):
        return ScriptError(
            f"the API key may not do this (403: {detail})",
            fix="check the key's workspace and permissions in the Anthropic Console",
            code=EXIT_BACKEND,
        )
    if isinstance(exc, anthropic.NotFoundError):
        return ScriptError(
            f"not found (404: {detail})",
            fix=f"check --model / ${MODEL_ENV} (default {DEFAULT_MODEL}) and ANTHROPIC_BASE_URL",
            code=EXIT_BACKEND,
        )
    if isinstance(exc, anthropic.RateLimitError | anthropic.InternalServerError | anthropic.APITimeoutError):
        what = f"{status}: {detail}" if status else detail
        return ScriptError(
            f"the Anthropic API is busy or timed out ({what})",
            fix="retry in a minute; the SDK already retried twice",
            code=EXIT_TIMEOUT,
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ScriptError(
            f"cannot reach the Anthropic API ({detail})",
            fix="check the network, a proxy, or ANTHROPIC_BASE_URL",
            code=EXIT_BACKEND,
        )
    if isinstance(exc, anthropic.APIStatusError):
        return ScriptError(
            f"the Anthropic API refused the request ({status}: {detail})",
            fix="check --model, --max-tokens and --system",
            code=EXIT_BACKEND,
        )
    return ScriptError(f"Anthropic SDK error: {detail}", fix=None, code=EXIT_BACKEND)


def echo(text: str) -> None:
    """Show streamed model text on stderr as it arrives."""
    sys.stderr.write(text)
    sys.stderr.flush()


def call_model(client: Any, request: dict[str, Any], stream: bool) -> Any:
    """One Messages API call; streamed text is echoed to stderr. Returns the complete message."""
    if not stream:
        return client.messages.create(**request)
    wrote = False
    with client.messages.stream(**request) as events:
        for event in events:
            if event.type == "text" and event.text:
                echo(event.text)
                wrote = True
        message = events.get_final_message()
    if wrote:
        echo("\n")
    return message


def assistant_content(message: Any) -> list[dict[str, Any]]:
    """The response's content blocks as request parameters, to send back in the conversation."""
    content: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            if block.text:  # the API refuses empty text blocks
                content.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        else:  # thinking and other blocks go back unchanged
            content.append(block.to_dict())
    return content


def clip_input(value: Any, limit: int) -> Any:
    """A tool call's input for the JSON report, with long strings clipped."""
    if isinstance(value, str):
        return clip(value, limit)[0]
    if isinstance(value, dict):
        return {k: clip_input(v, limit) for k, v in value.items()}
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool-use loop and print the answer; return the exit code."""
    args = parse_args(argv)
    if args.print_tools:
        print(json.dumps(tool_definitions(), indent=2))
        return EXIT_OK
    prompt = read_prompt(args)
    if args.max_turns < 1:
        fail("--max-turns must be at least 1", fix="for example --max-turns 10")
    if args.sandbox_id and args.keep:
        log("note: --keep has no effect with --sandbox-id: that sandbox is never killed")

    load_env_file()
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ScriptError(
            "ANTHROPIC_API_KEY is not set",
            fix=f"export ANTHROPIC_API_KEY=sk-ant-... or put it in a .env file (keys: {ANTHROPIC_KEYS_URL})",
            code=EXIT_BACKEND,
        )
    try:
        import anthropic
    except ImportError:
        fail("the anthropic package is not installed", fix='pip install "anthropic>=0.70"', code=EXIT_BACKEND)

    model = args.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    limits = Limits(max_output=args.max_output, timeout=args.timeout)
    session = SandboxSession(
        args.backend, sandbox_id=args.sandbox_id, timeout=args.sandbox_timeout, metadata=SANDBOX_METADATA
    )
    client = anthropic.Anthropic()
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    tool_calls: list[dict[str, Any]] = []
    usage = {"input_tokens": 0, "output_tokens": 0}
    answer = ""
    stop_reason = None
    turns = 0
    log(f"model: {model}")
    try:
        if args.sandbox_id:
            session.get()  # a wrong ID fails now, before any tokens are spent
        while True:
            turns += 1
            request = {
                "model": model,
                "max_tokens": args.max_tokens,
                "system": args.system or SYSTEM_PROMPT,
                "tools": tool_definitions(),
                "messages": messages,
            }
            try:
                message = call_model(client, request, args.stream)
            except anthropic.APIError as exc:
                raise anthropic_error(exc) from exc
            usage["input_tokens"] += message.usage.input_tokens or 0
            usage["output_tokens"] += message.usage.output_tokens or 0
            stop_reason = message.stop_reason
            answer = "".join(block.text for block in message.content if block.type == "text")
            messages.append({"role": "assistant", "content": assistant_content(message)})
            if stop_reason not in ("tool_use", "pause_turn"):
                break
            if turns == args.max_turns:  # the model wants more, but the budget is spent
                stop_reason = "max_turns"
                break
            if stop_reason == "pause_turn":  # a long server-side turn: send it back to continue
                continue
            results = []
            for block in message.content:
                if block.type != "tool_use":
                    continue
                log(f"[turn {turns}] {describe_call(block.name, block.input)}")
                outcome = execute(session.get(), block.name, block.input, limits)
                log(f"  {outcome.summary()}")
                results.append(outcome.to_anthropic(block.id))
                tool_calls.append(
                    {
                        "turn": turns,
                        "name": block.name,
                        "input": clip_input(block.input, args.max_output),
                        "is_error": outcome.is_error,
                        "summary": outcome.summary(),
                    }
                )
            messages.append({"role": "user", "content": results})
    finally:
        session.close(keep=args.keep)

    if args.json:
        emit_json(
            {
                "answer": answer,
                "stop_reason": stop_reason,
                "turns": turns,
                "tool_calls": tool_calls,
                "model": model,
                "sandbox_id": session.sandbox_id,
                "backend": session.backend.kind if session.backend else None,
                "kept": session.sandbox is not None and (not session.created or args.keep),
                "usage": usage,
            }
        )
    elif answer:
        print(answer, flush=True)

    log(f"done: {turns} turn(s), {len(tool_calls)} tool call(s), stop reason {stop_reason}")
    if stop_reason == "max_turns":
        log(f"error: stopped after {turns} model calls, and the model still wanted to use tools")
        log(f"fix: raise --max-turns (now {args.max_turns}) or ask for less in one run")
        return EXIT_TIMEOUT
    if stop_reason in ("end_turn", "stop_sequence"):
        return EXIT_OK
    log(f"error: the model stopped early (stop reason {stop_reason})")
    if stop_reason == "max_tokens":
        log(f"fix: raise --max-tokens (now {args.max_tokens})")
    return EXIT_FAILED


if __name__ == "__main__":
    run_main(main)
