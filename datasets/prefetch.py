"""Ordered, bounded read-ahead: work runs on threads, results come back in input order.

At most ``window`` items are submitted and not yet handed to the consumer, so memory is bounded
by ``window`` results whatever the dataset size.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Decode threads by default: the CPU count, at most 4 (OpenCV releases the GIL while decoding)."""
    return max(1, min(4, os.cpu_count() or 1))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads with at most ``window`` results in flight.

    ``workers=0`` runs ``fn`` in the calling thread (same results, no overlap). Exceptions from
    ``fn`` propagate when their item's turn comes. Closing the iterator early cancels the rest.
    """
    it = iter(items)
    if workers <= 0:
        for item in it:
            yield fn(item)
        return
    window = max(1, window)
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trtq-data")
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def read_ahead(items: Iterable[T], *, window: int) -> Iterator[T]:
    """Iterate ``items`` on one background thread, keeping at most ``window`` items queued.

    For a user's iterable (a generator is not thread-safe, so one thread reads it in order).
    ``window=0`` reads in the calling thread. Exceptions are re-raised in the consumer.
    """
    if window <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=window)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))
            return
        put(("end", None))

    thread = threading.Thread(target=reader, name="trtq-data-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=1.0)


_END = object()
