"""Webhook deliveries: each stored event POSTed to every webhook that asked for it, signed as E2B signs.

A webhook gets its events in order, one at a time: a delivery that fails (no answer, or a status
other than 2xx) is tried again with exponential backoff, and the webhook's later events wait behind
it. An event leaves the outbox once its receiver answered 2xx, or after `MAX_ATTEMPTS` tries.
Deliveries are sent by the server itself, never by a sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import sqlite3
import time
import uuid

import httpx

from e2b_local.control.services.events import Events

log = logging.getLogger("e2b_local")

SIGNATURE_VERSION = "v1"
# How long a receiver has to answer one delivery.
DELIVERY_TIMEOUT = 10.0
# Backoff after a failed delivery: the first retry after FIRST_RETRY seconds, doubling up to MAX_RETRY.
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
MAX_ATTEMPTS = 12
# The longest the loop sleeps without looking at the outbox.
IDLE_WAIT = 30.0


def signature(secret: str, body: bytes) -> str:
    """E2B's `e2b-signature`: SHA-256 of the secret followed by the body, URL-safe base64 without padding."""
    digest = hashlib.sha256(secret.encode() + body).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def retry_delay(attempts: int) -> float:
    """The wait before the next try after `attempts` failed ones."""
    return min(FIRST_RETRY * 2 ** (attempts - 1), MAX_RETRY)


class Deliveries:
    """Delivers the outbox of `events` in the background."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        """Start delivering (what a previous run left in the outbox first)."""
        self._client = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, follow_redirects=False, trust_env=False)
        self.events.listeners.append(self._wake.set)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop delivering; what is not delivered yet stays in the outbox for the next start."""
        if self._wake.set in self.events.listeners:
            self.events.listeners.remove(self._wake.set)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                heads = self.events.pending()
            except (sqlite3.Error, OSError) as exc:
                log.warning("webhook outbox unreadable (%s)", exc)
                heads = []
            now = time.time()
            due = [head for head in heads if head[4] <= now]
            if due:
                await asyncio.gather(*(self._deliver(*head[:4]) for head in due))
                continue
            wait = min([head[4] - now for head in heads] + [IDLE_WAIT])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.01))

    async def _deliver(self, seq: int, webhook_id: str, body: str, attempts: int) -> None:
        webhook = self.events.webhook(webhook_id)
        if webhook is None:
            self.events.delivered(seq)
            return
        payload = body.encode()
        headers = {"content-type": "application/json", "e2b-webhook-id": webhook.id,
                   "e2b-delivery-id": str(uuid.uuid4()), "e2b-signature-version": SIGNATURE_VERSION,
                   "e2b-signature": signature(webhook.signature_secret, payload)}
        assert self._client is not None
        try:
            response = await self._client.post(webhook.url, content=payload, headers=headers)
            ok, outcome = response.is_success, f"status {response.status_code}"
        except httpx.HTTPError as exc:
            ok, outcome = False, f"{type(exc).__name__}: {exc}"
        try:
            if ok:
                self.events.delivered(seq)
            elif attempts + 1 >= MAX_ATTEMPTS:
                log.warning("webhook %s: giving up on an event after %d attempts (%s)", webhook.id,
                            attempts + 1, outcome)
                self.events.delivered(seq)
            else:
                log.info("webhook %s: delivery failed (%s); retrying", webhook.id, outcome)
                self.events.retry_at(seq, attempts + 1, time.time() + retry_delay(attempts + 1))
        except (sqlite3.Error, OSError) as exc:
            log.warning("webhook %s: could not record a delivery (%s)", webhook.id, exc)
            await asyncio.sleep(FIRST_RETRY)
