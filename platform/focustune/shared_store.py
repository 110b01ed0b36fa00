"""Work that runs share, stored once by what it depends on, in a local folder or under a storage URI
(s3://, gs://, ... through pyarrow's filesystems, as a sweep reaches its storage).

An entry is a blob of bytes at an address (a digest of what it depends on, chosen by its user). Under
the store's root, entry ``ADDRESS`` is the folder ``ADDRESS/`` with

* ``data-<sha256>.bin``: the bytes, named by their own digest;
* ``entry.json``: the completion marker, written last: the data file, its digest and the producer's
  description (its recipe, where and how long it took). An entry is loaded only when its marker is
  there and the data file has the digest the marker names; anything else (a producer killed half-way,
  a partial upload) counts as absent and is produced again;
* ``claim.json``: who is producing the entry, and until when: a lease its producer renews while it
  works. Concurrent runs that need the entry wait for the claimant instead of producing it too; a
  claim whose lease ran out (its producer was killed) is taken over.

Why a claim in storage rather than a lock held by Ray: every run that can use an entry reaches the
store (trials on any node of a cluster, several drivers, ``focustune train``), a lease outlives the
driver that started it (a resumed sweep finds it), and the trainer's layer imports no Ray. A new claim
in a local folder is an exclusive create (``O_EXCL``: exact); object stores have no exclusive create
that pyarrow exposes, so there a claim is written, left to settle and read back: of two runs claiming
within the settle time, the later write wins and both read it. Two runs could both produce an entry
only if one stalls longer than the settle time between reading "unclaimed" and writing its claim (or
when two waiters take over the same expired lease at once); that costs the work twice, never a wrong
entry: data files are named by their digest and every marker names a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focustune.files import write_atomic

MARKER = "entry.json"
CLAIM = "claim.json"


class _Folder:
    """A local folder: atomic writes by rename, exclusive creates."""

    exclusive = True

    def __init__(self, root: str):
        self.root = Path(root)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, payload: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, payload)

    def create(self, name: str, payload: bytes) -> bool:
        """Write ``name`` only if it does not exist; whether this call created it."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as stream:
            stream.write(payload)
        return True

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class _ObjectStore:
    """A storage URI through pyarrow: every object is written whole (readers see all of it or none)."""

    exclusive = False

    def __init__(self, location: str):
        from pyarrow import fs

        self.files, self.root = fs.FileSystem.from_uri(location)

    def read(self, name: str) -> bytes | None:
        from pyarrow import fs

        path = f"{self.root}/{name}"
        if self.files.get_file_info(path).type == fs.FileType.NotFound:
            return None
        with self.files.open_input_stream(path) as stream:
            return bytes(stream.read())

    def write(self, name: str, payload: bytes) -> None:
        with self.files.open_output_stream(f"{self.root}/{name}") as stream:
            stream.write(payload)

    def create(self, name: str, payload: bytes) -> bool:
        raise NotImplementedError("object stores have no exclusive create here")

    def remove(self, name: str) -> None:
        from pyarrow import fs

        path = f"{self.root}/{name}"
        if self.files.get_file_info(path).type != fs.FileType.NotFound:
            self.files.delete_file(path)


@dataclass(frozen=True)
class Entry:
    """A loaded entry: its bytes, its marker's content, and whether this call produced it."""

    address: str
    data: bytes
    marker: dict[str, Any]
    produced: bool


class SharedStore:
    """Entries under ``location`` (a local folder or a storage URI); see the module's docstring.

    ``lease_s``: how long a claim holds without renewal (the producer renews it every third of that);
    ``settle_s``: how long a claim in an object store settles before it is read back; ``poll_s``: how
    often a waiting run looks again."""

    def __init__(self, location: str, *, lease_s: float = 120.0, settle_s: float = 1.0, poll_s: float = 2.0,
                 log: Callable[[str], None] | None = None):
        self.location = location.rstrip("/")
        self.backend: _Folder | _ObjectStore = _ObjectStore(location) if "://" in location else _Folder(location)
        self.lease_s, self.poll_s = lease_s, poll_s
        self.settle_s = settle_s if not self.backend.exclusive else min(settle_s, 0.2)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.log = log or (lambda message: None)

    def where(self, address: str) -> str:
        """The entry's folder (path or URI)."""
        return f"{self.location}/{address}"

    # ------------------------------------------------------------------ reading
    def load(self, address: str) -> Entry | None:
        """The complete entry at ``address``, or None (absent, unfinished, or its data not the marker's)."""
        marker = self._read_json(f"{address}/{MARKER}")
        if marker is None:
            return None
        data = self.backend.read(f"{address}/{marker['data']}")
        if data is None or hashlib.sha256(data).hexdigest() != marker["sha256"]:
            self.log(f"shared store: entry {address} does not match its marker; it is produced again")
            return None
        return Entry(address, data, marker, produced=False)

    def _read_json(self, name: str) -> dict[str, Any] | None:
        raw = self.backend.read(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None  # not written by this store (its writes are whole): counts as absent
        return value if isinstance(value, dict) else None

    # ------------------------------------------------------------------ producing once
    def obtain(self, address: str, produce: Callable[[], tuple[bytes, dict[str, Any]]]) -> Entry:
        """The entry at ``address``: loaded when complete; else produced by this call (``produce``
        returns the bytes and a description for the marker) while this run holds the claim, or, while
        another run holds it, waited for."""
        waiting_for = ""
        while True:
            entry = self.load(address)
            if entry is not None:
                return entry
            if self._claim(address):
                try:
                    entry = self.load(address)  # published between our look and our claim
                    return entry if entry is not None else self._produce(address, produce)
                finally:
                    self._release(address)
            holder = (self._read_json(f"{address}/{CLAIM}") or {}).get("owner", "")
            if holder != waiting_for:
                self.log(f"shared store: waiting for {address}, claimed by {holder}")
                waiting_for = holder
            time.sleep(self.poll_s)

    def _produce(self, address: str, produce: Callable[[], tuple[bytes, dict[str, Any]]]) -> Entry:
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(address, stop), daemon=True)
        renewer.start()
        try:
            data, description = produce()
        finally:
            stop.set()
            renewer.join()
        digest = hashlib.sha256(data).hexdigest()
        marker = {**description, "address": address, "data": f"data-{digest}.bin", "sha256": digest,
                  "bytes": len(data), "producer": self.owner, "completed": time.time()}
        self.backend.write(f"{address}/{marker['data']}", data)
        self.backend.write(f"{address}/{MARKER}", json.dumps(marker, indent=2).encode())
        return Entry(address, data, marker, produced=True)

    def _claim_payload(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.lease_s}).encode()

    def _claim(self, address: str) -> bool:
        """Whether this run now holds the claim on ``address``."""
        name = f"{address}/{CLAIM}"
        held = self._read_json(name)
        if held is not None and held.get("owner") != self.owner and float(held.get("expires", 0)) > time.time():
            return False
        if held is None and self.backend.exclusive:
            return self.backend.create(name, self._claim_payload())
        self.backend.write(name, self._claim_payload())  # an expired lease, or an object store: write, settle, verify
        time.sleep(self.settle_s)
        return (self._read_json(name) or {}).get("owner") == self.owner

    def _renew(self, address: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            self.backend.write(f"{address}/{CLAIM}", self._claim_payload())

    def _release(self, address: str) -> None:
        name = f"{address}/{CLAIM}"
        if (self._read_json(name) or {}).get("owner") == self.owner:
            self.backend.remove(name)
