"""The owner's end of the long-lived task stream to one worker.

Tasks pushed while a send is under way are batched into the next message,
and replies come back in batches the same way: under load, one message
carries many tasks. A streaming task's items (:class:`GeneratorItem`) come
back on the same stream before its reply. When the stream breaks (the worker
died), every task still pending on it fails with :class:`StreamBroken`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable

import grpclib.const
from grpclib.client import Channel

from ..protocol.rt import TaskBatch
from . import rpc
from .task_wire import (
    CancelRequest,
    GeneratorAck,
    GeneratorItem,
    ReleasePins,
    WireReply,
    WireTask,
)

logger = logging.getLogger(__name__)

PUSH_ROUTE = "/rt.CoreWorker/PushTasks"


class StreamBroken(ConnectionError):
    """The stream to the worker broke; its pending tasks' fate is unknown."""


#: Called with the reply, or with the error that ended the stream (then reply is None).
ReplyCallback = Callable[[WireReply | None, BaseException | None], None]
#: Called with each item a streaming task reports, before its reply.
ItemCallback = Callable[[GeneratorItem], None]
#: What the owner sends besides tasks; none gets a reply.
Control = CancelRequest | ReleasePins | GeneratorAck


class PushStream:
    def __init__(self, channel: Channel, name: str) -> None:
        self._channel = channel
        self._name = name
        self._outbox: list[WireTask | Control] = []
        # Tasks sent and not answered: the callback run as each reply arrives
        # (no future, no extra loop iteration: the owner's hot path).
        self._pending: dict[bytes, ReplyCallback] = {}
        # Streaming tasks sent and not answered: the callback run per item.
        self._items: dict[bytes, ItemCallback] = {}
        self._wakeup = asyncio.Event()
        self._broken: BaseException | None = None
        self._broken_event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def push(self, task: WireTask) -> asyncio.Future[WireReply]:
        """Sends a task; the future holds its reply (or the stream's error)."""
        fut: asyncio.Future[WireReply] = asyncio.get_running_loop().create_future()

        def settle(reply: WireReply | None, error: BaseException | None) -> None:
            if fut.done():
                return
            if reply is None:
                fut.set_exception(error or StreamBroken("no reply"))
            else:
                fut.set_result(reply)

        self.push_with(task, settle)
        return fut

    def push_with(
        self, task: WireTask, on_reply: ReplyCallback, on_item: ItemCallback | None = None
    ) -> None:
        """Sends a task; ``on_reply`` runs on the loop with its reply (or error),
        ``on_item`` with each item of a streaming task before that."""
        if self._broken is not None:
            error = StreamBroken(str(self._broken))
            asyncio.get_running_loop().call_soon(on_reply, None, error)
            return
        self._pending[task[0]] = on_reply
        if on_item is not None:
            self._items[task[0]] = on_item
        self._outbox.append(task)
        self._wakeup.set()

    def send(self, item: Control) -> None:
        """Sends a control item (a cancel request) that gets no reply."""
        if self._broken is None:
            self._outbox.append(item)
            self._wakeup.set()

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except BaseException:
            pass

    async def _run(self) -> None:
        try:
            async with self._channel.request(
                PUSH_ROUTE, grpclib.const.Cardinality.STREAM_STREAM, TaskBatch, TaskBatch
            ) as stream:
                await stream.send_request()
                receiver = asyncio.ensure_future(self._receive(stream))
                # Its error is also ours (_fail); when we are cancelled first
                # (abandon) nobody else looks at it.
                receiver.add_done_callback(_retrieve)
                try:
                    while True:
                        await self._wakeup.wait()
                        self._wakeup.clear()
                        if receiver.done():
                            receiver.result()
                            raise StreamBroken("the worker closed the stream")
                        batch, self._outbox = self._outbox, []
                        if batch:
                            payload = pickle.dumps(batch, protocol=5)
                            await stream.send_message(TaskBatch(payload=payload))
                finally:
                    receiver.cancel()
        except asyncio.CancelledError:
            self._fail(StreamBroken("the stream was closed"))
            raise
        except rpc.CONNECTION_ERRORS as e:  # StreamBroken is a ConnectionError
            self._fail(e)
        except BaseException as e:
            logger.exception("task stream to %s failed", self._name)
            self._fail(e)

    async def _receive(self, stream: object) -> None:
        try:
            while True:
                message = await stream.recv_message()  # type: ignore[attr-defined]
                if message is None:
                    raise StreamBroken("the worker ended the stream")
                replies: list[WireReply | GeneratorItem] = pickle.loads(message.payload)
                for reply in replies:
                    if type(reply) is GeneratorItem:
                        on_item = self._items.get(reply.task_id)
                        if on_item is not None:
                            try:
                                on_item(reply)
                            except Exception:
                                logger.exception("handling an item from %s failed", self._name)
                        continue
                    assert type(reply) is tuple
                    self._items.pop(reply[0], None)
                    on_reply = self._pending.pop(reply[0], None)
                    if on_reply is None:
                        continue
                    try:
                        on_reply(reply, None)
                    except Exception:
                        logger.exception("handling a reply from %s failed", self._name)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._fail(e)
            self._wakeup.set()
            raise

    def abandon(self, reason: str) -> None:
        """Gives the stream up (its worker's node died): pending pushes fail now,
        rather than when a connection to an unreachable machine times out."""
        self._fail(StreamBroken(reason))
        self._task.cancel()

    async def wait_broken(self) -> None:
        """Returns when the stream has broken (the worker died or closed it)."""
        await self._broken_event.wait()

    def _fail(self, error: BaseException) -> None:
        if self._broken is None:
            self._broken = error
            self._broken_event.set()
        pending, self._pending = self._pending, {}
        self._items = {}
        loop = asyncio.get_running_loop()
        for on_reply in pending.values():
            loop.call_soon(on_reply, None, StreamBroken(f"{type(error).__name__}: {error}"))


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
