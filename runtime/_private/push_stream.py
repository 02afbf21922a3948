"""The owner's end of the long-lived task stream to one worker.

It rides the task channel (``task_channel.py``): tasks pushed during one
loop iteration leave as one batch, and replies come back batched the same
way. A streaming task's items (:class:`GeneratorItem`) come back on the
same stream before its reply. When the stream breaks (the worker died, or
refused us), every task still pending on it fails with :class:`StreamBroken`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import auth, task_channel, tls
from .task_wire import (
    CancelRequest,
    GeneratorAck,
    GeneratorItem,
    ReleasePins,
    WireReply,
    WireTask,
    WorkerExiting,
)

logger = logging.getLogger(__name__)


class StreamBroken(ConnectionError):
    """The stream to the worker broke; its pending tasks' fate is unknown."""


#: Called with the task's context (what the pusher passed), the stream, and the
#: reply, or the error that ended the stream (then reply is None). One callback
#: serves many tasks (a lease's, an actor's): a push makes no closure.
ReplyCallback = Callable[[Any, "PushStream", WireReply | None, BaseException | None], None]
#: Called with each item a streaming task reports, before its reply.
ItemCallback = Callable[[GeneratorItem], None]
#: What the owner sends besides tasks; none gets a reply.
Control = CancelRequest | ReleasePins | GeneratorAck


class PushStream:
    """Invariant: a task is in ``_pending`` (its callback and context) from its
    push until its reply or the stream's failure, whichever comes first; each
    runs its callback once."""

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        token: str | None = None,
        peer: tuple[bytes, bytes] = (b"", b""),
        local: bool = False,
    ) -> None:
        self._name = name
        self.peer = peer  # the worker's (worker id, node id), for task events
        # Items pushed before the connection is up wait here, then leave as one batch.
        self._early: list[WireTask | Control] = []
        self._channel: task_channel.Channel | None = None
        # Tasks sent and not answered: the callback run as each reply arrives
        # (no future, no extra loop iteration: the owner's hot path).
        self._pending: dict[bytes, ReplyCallback] = {}
        self._contexts: dict[bytes, Any] = {}  # (two dicts: no tuple per task)
        # Streaming tasks sent and not answered: the callback run per item.
        self._items: dict[bytes, ItemCallback] = {}
        self._broken: BaseException | None = None
        self._broken_event = asyncio.Event()
        # The worker said it exits (it ran a function's max_calls): set before
        # the reply of the task that made it so is handled.
        self.exiting = False
        self._token = auth.token() if token is None else token
        # On the worker's own node: its abstract Unix socket, if it answers.
        self._local = task_channel.local_name(peer[0]) if local and peer[0] else None
        self._task = asyncio.get_running_loop().create_task(self._connect(host, port))

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def push(self, task: WireTask) -> asyncio.Future[WireReply]:
        """Sends a task; the future holds its reply (or the stream's error)."""
        fut: asyncio.Future[WireReply] = asyncio.get_running_loop().create_future()

        def settle(
            _: Any, __: PushStream, reply: WireReply | None, error: BaseException | None
        ) -> None:
            if fut.done():
                return
            if reply is None:
                fut.set_exception(error or StreamBroken("no reply"))
            else:
                fut.set_result(reply)

        self.push_with(task, settle, None)
        return fut

    def push_with(
        self,
        task: WireTask,
        on_reply: ReplyCallback,
        context: Any,
        on_item: ItemCallback | None = None,
    ) -> None:
        """Sends a task; ``on_reply(context, self, reply, error)`` runs on the
        loop with its reply (or error), ``on_item`` with each item of a
        streaming task before that."""
        if self._broken is not None:
            error = StreamBroken(str(self._broken))
            asyncio.get_running_loop().call_soon(on_reply, context, self, None, error)
            return
        self._pending[task[0]] = on_reply
        self._contexts[task[0]] = context
        if on_item is not None:
            self._items[task[0]] = on_item
        self._send(task)

    def send(self, item: Control) -> None:
        """Sends a control item (a cancel request) that gets no reply."""
        if self._broken is None:
            self._send(item)

    def _send(self, item: WireTask | Control) -> None:
        if self._channel is not None:
            self._channel.send(item)
        else:
            self._early.append(item)

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except BaseException:
            pass
        if self._channel is not None:
            self._channel.close()
        self._fail(StreamBroken("the stream was closed"))

    async def _connect(self, host: str, port: int) -> None:
        try:
            channel = await task_channel.connect(
                host,
                port,
                self._receive,
                self._lost,
                self._token,
                ssl=tls.client_context(),
                local=self._local,
            )
        except asyncio.CancelledError:
            self._fail(StreamBroken("the stream was closed"))
            raise
        except OSError as e:
            self._fail(e)
            return
        if self._broken is not None:  # abandoned meanwhile
            channel.abort()
            return
        self._channel = channel
        early, self._early = self._early, []
        if early:
            channel.send_all(early)

    def _lost(self, error: BaseException | None) -> None:
        self._fail(error or StreamBroken("the worker ended the stream"))

    def _receive(self, replies: list[WireReply | GeneratorItem | WorkerExiting]) -> None:
        for reply in replies:
            if type(reply) is tuple and reply and type(reply[0]) is bytes:
                task_id = reply[0]  # a reply: the usual item
            elif type(reply) is GeneratorItem:
                on_item = self._items.get(reply.task_id)
                if on_item is not None:
                    try:
                        on_item(reply)
                    except Exception:
                        logger.exception("handling an item from %s failed", self._name)
                continue
            elif type(reply) is WorkerExiting:
                self.exiting = True
                continue
            else:
                logger.error("a malformed reply from %s: %r", self._name, type(reply))
                continue
            if self._items:
                self._items.pop(task_id, None)
            on_reply = self._pending.pop(task_id, None)
            if on_reply is None:
                continue
            try:
                on_reply(self._contexts.pop(task_id), self, reply, None)
            except Exception:
                logger.exception("handling a reply from %s failed", self._name)

    def abandon(self, reason: str) -> None:
        """Gives the stream up (its worker's node died): pending pushes fail now,
        rather than when a connection to an unreachable machine times out."""
        self._fail(StreamBroken(reason))
        self._task.cancel()
        if self._channel is not None:
            self._channel.abort()

    async def wait_broken(self) -> None:
        """Returns when the stream has broken (the worker died or closed it)."""
        await self._broken_event.wait()

    def _fail(self, error: BaseException) -> None:
        if self._broken is None:
            self._broken = error
            self._broken_event.set()
        pending, self._pending = self._pending, {}
        contexts, self._contexts = self._contexts, {}
        self._items = {}
        self._early = []
        loop = asyncio.get_running_loop()
        for task_id, on_reply in pending.items():
            broken = StreamBroken(f"{type(error).__name__}: {error}")
            loop.call_soon(on_reply, contexts[task_id], self, None, broken)
