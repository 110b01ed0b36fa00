"""MLflow operations of a sweep's trials, queued and sent in order by one sender thread.

Each operation is a small frozen record (:class:`StartRun`, :class:`LogEpoch`, :class:`EndRun`) of
plain data, so the queue pickles into Tune's experiment checkpoint. When the tracking server is
unreachable (a transport error: connection refused, timeout, a busy store) the operations stay
queued and are retried now and then; any other error fails that one operation loudly (logged, kept
in ``failed``) and the queue goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from focustune import credentials
from focustune.credentials import masked

log = logging.getLogger(__name__)

#: MLflow's HTTP client fails fast instead of retrying for minutes: the queue retries itself.
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast_http() -> None:
    """Make MLflow's HTTP requests fail fast (unless the environment says otherwise)."""
    for key, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(key, value)


def mlflow_client(uri: str) -> Any:
    """An MLflow client of ``uri``; the sweep's tracking starts here, so its requests fail fast."""
    fail_fast_http()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def is_transport_error(exc: BaseException) -> bool:
    """True for an outage worth waiting out (server unreachable, timeout, busy store); False for an
    error that retrying cannot fix (a bad request, a bug). MLflow wraps the cause: the chain is read."""
    import requests
    from sqlalchemy.exc import OperationalError

    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError,
                 OperationalError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, transient) or getattr(seen, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# ---------------------------------------------------------------- operations

@dataclass(frozen=True)
class StartRun:
    """Open (or find again) the trial's run and log its params."""

    trial_id: str
    config: dict[str, Any]
    kind: ClassVar[str] = "start"


@dataclass(frozen=True)
class LogEpoch:
    """One epoch's metrics, at step ``epoch``."""

    trial_id: str
    metrics: dict[str, float]
    epoch: int
    kind: ClassVar[str] = "epoch"


@dataclass(frozen=True)
class EndRun:
    """The trial's final metrics, tags (without the tag prefix) and files; then its run ends with ``status``."""

    trial_id: str
    status: str
    tags: dict[str, str]
    final: dict[str, float]
    files: dict[str, Any]
    kind: ClassVar[str] = "end"


Operation = StartRun | LogEpoch | EndRun


class FailedOperation(NamedTuple):
    """An operation that failed for a reason other than an outage: it is not retried."""

    kind: str
    trial_id: str
    error: str


# ---------------------------------------------------------------- the queue and its sender

class OperationQueue:
    """Operations sent in order by a sender thread (started on the first one); a subclass applies
    each in :meth:`_apply`. ``queue`` and ``failed`` are plain data; the thread and locks are rebuilt
    after unpickling."""

    RUNTIME: ClassVar[tuple[str, ...]] = ("_queue_lock", "_send_lock", "_wake", "_sender", "_stopping")

    def __init__(self, tracking_uri: str, retry_interval_s: float = 5.0):
        self.tracking_uri = tracking_uri
        self.retry_interval_s = retry_interval_s
        self.queue: list[Operation] = []
        self.failed: list[FailedOperation] = []
        self._down_since: float | None = None
        self._last_try = 0.0
        self._start_runtime()

    def _start_runtime(self) -> None:
        """What does not pickle: the locks and the sender thread."""
        self._queue_lock = threading.Lock()  # guards the queue list
        self._send_lock = threading.Lock()  # held while one operation is applied and dequeued
        self._wake = threading.Event()
        self._sender: threading.Thread | None = None
        self._stopping = False

    def __getstate__(self) -> dict:  # pickled with the Tune experiment, without the URI's password
        state = {k: v for k, v in self.__dict__.items() if k not in self.RUNTIME}
        return {**state, "tracking_uri": credentials.stored(self.tracking_uri)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, tracking_uri=credentials.revealed(state["tracking_uri"]))
        self._start_runtime()

    def _apply(self, op: Operation) -> None:
        raise NotImplementedError

    def _enqueue(self, op: Operation) -> None:
        with self._queue_lock:
            self.queue.append(op)
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="mlflow-sender", daemon=True)
            self._sender.start()
        self._wake.set()

    def _send_loop(self) -> None:
        """The sender thread: sends what is queued when woken; while MLflow is down, retries now and then."""
        while not self._stopping:
            self._wake.wait(self.retry_interval_s)
            self._wake.clear()
            if self._down_since is None or time.monotonic() - self._last_try >= self.retry_interval_s:
                self._send_queued()

    def stop(self, wait_s: float) -> bool:
        """Stop the sender thread and send what is left, retrying for ``wait_s``."""
        self._stopping = True
        self._wake.set()
        return self.flush(wait_s=wait_s)

    def flush(self, wait_s: float = 0.0) -> bool:
        """Send queued operations in order; True when the queue is empty. Retries for ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            if self._down_since is None or time.monotonic() - self._last_try >= self.retry_interval_s or wait_s:
                self._send_queued()
            if not self.queue or time.monotonic() >= deadline:
                break
            time.sleep(min(self.retry_interval_s, max(deadline - time.monotonic(), 0)))
        if self.queue and wait_s:
            log.warning("MLflow at %s unreachable: %d logging operation(s) could not be sent",
                        masked(self.tracking_uri), len(self.queue))
        return not self.queue

    # ---------------------------------------------------------------- state for restores
    @contextmanager
    def snapshot(self) -> Iterator[dict[str, list]]:
        """The queue's state for a restore, taken while no operation is being sent (none is sent
        twice). What is queued is sent first, since an operation kept in the snapshot but sent after
        it would be sent again after a restore: only what an outage holds back stays queued."""
        if self._down_since is None:
            self._send_queued()
        with self._send_lock, self._queue_lock:
            yield {"queue": list(self.queue), "failed": list(self.failed)}

    @contextmanager
    def restoring(self, state: dict) -> Iterator[None]:
        """Put back a snapshot's queue (before anything queued since) and failed operations; the
        caller restores its own part inside."""
        with self._send_lock, self._queue_lock:
            self.queue = list(state.get("queue", [])) + self.queue
            self.failed = list(state.get("failed", []))
            yield

    # ---------------------------------------------------------------- sending
    def _send_queued(self) -> None:
        """Apply queued operations one at a time, in order, until the queue is empty or MLflow is down."""
        self._last_try = time.monotonic()
        while True:
            with self._send_lock:
                with self._queue_lock:
                    if not self.queue:
                        break
                    op = self.queue[0]
                try:
                    self._apply(op)
                except Exception as exc:  # noqa: BLE001 - sorted below: outages wait, the rest fail this operation
                    if is_transport_error(exc):
                        self._went_down(exc)
                        return
                    self._set_aside(op, exc)
                with self._queue_lock:
                    self.queue.pop(0)
        if self._down_since is not None:
            log.warning("MLflow at %s is reachable again; buffered logging sent", masked(self.tracking_uri))
            self._down_since = None

    def _went_down(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("MLflow at %s is unreachable (%s); training continues and logging is buffered "
                        "(%d operation(s))", masked(self.tracking_uri), type(exc).__name__, len(self.queue))

    def _set_aside(self, op: Operation, exc: Exception) -> None:
        """A failed operation is logged with its error and kept (it is not retried, nor blocks others)."""
        self.failed.append(FailedOperation(op.kind, op.trial_id, f"{type(exc).__name__}: {exc}"[:500]))
        log.error("MLflow logging failed (not an outage, not retried): %s of trial %s: %s: %s",
                  op.kind, op.trial_id, type(exc).__name__, exc)
