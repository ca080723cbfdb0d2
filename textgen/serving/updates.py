"""A request's progress, from a model's loop thread to the event loop that answers it.

``Admissions`` counts the requests the server holds and refuses one more
than its limit allows (429). Each admitted request is an ``Updates``: its
rows' updates (``RowUpdate`` lists) arrive on an asyncio queue, handed over
from the loop thread by one ``Handoff`` per event loop with a single wake-up
of the event loop per call of the model's loop, whatever the number of
requests it served.
"""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator

from textgen.errors import TextgenError
from textgen.generation.batching import RowUpdate
from textgen.generation.request import SampleRequest
from textgen.serving.api import ApiError, ServedModel, ServerLimits

# Put on a request's queue when its client has gone: the response stops reading updates.
_LEFT = object()


class Admissions:
    """The requests the server holds (admitted and not yet released), across every model."""

    def __init__(self, limits: ServerLimits):
        self.limits = limits
        self.open = 0
        self._handoff: Handoff | None = None

    def admit(self, target: ServedModel, request: SampleRequest) -> "Updates":
        """Submit the request to the model's loop, or refuse it (429) when the server holds as many as it may."""
        if self.open >= self.limits.max_requests:
            raise ApiError(429, f"the server is serving as many requests as it may ({self.limits.max_requests}); "
                                f"try again shortly. Received: open_requests={self.open}", kind="rate_limit_error",
                           code="too_many_requests")
        loop = asyncio.get_running_loop()
        if self._handoff is None or self._handoff.loop is not loop:
            self._handoff = Handoff(loop)
        return Updates(self, target, request, self._handoff)


class Updates:
    """A request admitted to a model's loop: its updates, one list per call of the loop, until every row has
    ended or the client has gone (``leave``).

    Counted among the server's open requests from admission until
    ``release``, which also takes its rows out of the loop if they are still
    running (the client left, or the response failed).
    """

    def __init__(self, admissions: Admissions, target: ServedModel, request: SampleRequest, handoff: "Handoff"):
        self.admissions, self.target, self.request = admissions, target, request
        self.queue: asyncio.Queue = asyncio.Queue()
        queue = self.queue

        def listen(items):
            handoff.put(queue, items)

        try:
            self.ticket = target.batcher.submit(request, listen)
        except TextgenError as exc:  # a prompt the tokenizer refuses
            raise ApiError(400, str(exc), param="prompt") from None
        admissions.open += 1
        self.released = False

    async def __aiter__(self) -> AsyncIterator[list[RowUpdate]]:
        remaining = len(self.request.rows)
        try:
            while remaining:
                items = await self.queue.get()
                if items is _LEFT:
                    return
                if isinstance(items, BaseException):
                    raise ApiError(500, f"generation failed: {items}", kind="server_error")
                remaining -= sum(item.sample is not None for item in items)
                yield items
        finally:
            self.release()

    def leave(self) -> None:
        """The client has gone: release the request, and end the iteration over its updates."""
        self.release()
        self.queue.put_nowait(_LEFT)

    def release(self) -> None:
        """No longer count the request; its rows leave the loop at the next call if they still run."""
        if not self.released:
            self.released = True
            self.admissions.open -= 1
            if not self.ticket.done.is_set():
                self.target.batcher.cancel(self.ticket)


class Handoff:
    """Updates from a model's loop thread to the event loop's queues, with one wake-up of the event loop per
    call of the loop rather than one per request: every request's updates of one call arrive together."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: list = []
        self.lock = threading.Lock()

    def put(self, queue: asyncio.Queue, items) -> None:
        """Called on the loop thread: queue ``items`` for delivery on the event loop."""
        with self.lock:
            self.pending.append((queue, items))
            wake = len(self.pending) == 1
        if wake:
            try:
                self.loop.call_soon_threadsafe(self.deliver)
            except RuntimeError:  # the event loop has closed: nobody is listening any more
                pass

    def deliver(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for queue, items in pending:
            queue.put_nowait(items)
