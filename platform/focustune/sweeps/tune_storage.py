"""Tune's storage (``--storage``) as the sweep gives it to Tune: pickles signed, checkpoints deleted only
once no snapshot names them, object-store requests retried through an outage.

**Signed pickles.**
Tune keeps its experiment as pickles (``tuner.pkl``, ``experiment_state-*.json`` with pickled trials,
``search_gen_state-*.pkl``, ``callback-states-*.pkl``, a trial's ``error.pkl``), and ``--resume`` loads
them: whoever can write the storage (a shared bucket or NFS folder) could run code on the driver. So
Tune writes and reads its storage through :class:`SignedFiles`, a pyarrow filesystem around the real
one: each such file gets an HMAC-SHA256 (of its name and bytes) beside it, keyed by a secret that never
goes to the storage (:func:`key_path`, 0600), and a file whose HMAC does not match is refused
(:class:`~focustune.errors.ResumeRefused`) before a byte of it reaches Tune.

The HMAC file is written before the file it signs and keeps the previous HMAC too, so a driver killed
between the two writes leaves a pair that still matches.

**Checkpoints kept while named.** Tune (2.60) deletes a trial's oldest checkpoint as soon as it has
more than ``num_to_keep``, before the experiment snapshot naming a newer one is uploaded; a driver
killed in between resumes a trial from a checkpoint that is gone, and the trial fails (Tune's
``Trainable.restore`` checks that it exists before the trial's code runs). Here a deletion of a
``checkpoint_*`` folder waits (:class:`DeferredDeletes`) until two snapshot uploads that began after it
have completed: the second was taken after the deletion was asked for, so it no longer names the folder.

**Retries.** An S3 store is reached with pyarrow's retry strategy (:data:`S3_ATTEMPTS` attempts,
exponential backoff, about 13 s in all), so an outage of a few seconds delays a write instead of
failing the trial's attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import fs

from focustune.errors import ResumeRefused

#: The files of a Tune experiment that Tune unpickles when it restores one.
PICKLED = re.compile(r"(tuner\.pkl|experiment_state-.*\.json|search_gen_state-.*\.pkl|callback-states-.*\.pkl"
                     r"|error\.pkl|params\.pkl)")
SUFFIX = ".focustune-hmac"
CHECKPOINT_FOLDER = re.compile(r"checkpoint_\d+")
SNAPSHOT = re.compile(r"experiment_state-.*\.json")
S3_ATTEMPTS = 9  # AWS's default strategy, doubling waits: ~13 s in all before a request fails (measured)
KEY_ENV = "FOCUSTUNE_RESUME_KEY"  # another key file (a shared secret of several drivers, say)


def key_path() -> Path:
    """Where this user's signing key lives: ``$FOCUSTUNE_RESUME_KEY``, else ``~/.focustune/resume.key``."""
    return Path(os.environ.get(KEY_ENV) or Path.home() / ".focustune" / "resume.key").expanduser()


def signing_key() -> bytes:
    """The key (32 random bytes, created on first use, readable by this user only)."""
    path = key_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another driver made it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    if path.stat().st_mode & 0o077:
        raise ResumeRefused(f"{path}: the key that signs the sweep state is readable by others; "
                            f"make it private (chmod 600 {path})")
    return bytes.fromhex(path.read_text().strip())


def signed(path: str) -> bool:
    return bool(PICKLED.fullmatch(path.rsplit("/", 1)[-1]))


def signature(path: str, content: bytes) -> str:
    return hmac.new(signing_key(), path.rsplit("/", 1)[-1].encode() + b"\0" + content, hashlib.sha256).hexdigest()


class SignedFiles(fs.FileSystemHandler):
    """A pyarrow filesystem handler around ``inner`` that signs Tune's pickles on write and checks them
    on read; every other file goes through untouched. Picklable (Tune sends it to trial workers,
    which write only checkpoints): the key stays out of it."""

    def __init__(self, inner: fs.FileSystem):
        self.inner = with_retries(inner)

    def __reduce__(self) -> tuple:  # pyarrow pickles an S3 filesystem without its retry strategy: set again
        return SignedFiles, (self.inner,)

    # ---------------------------------------------------------------- signing and checking
    def _hmacs(self, path: str) -> list[str]:
        try:
            with self.inner.open_input_stream(path + SUFFIX) as stream:
                found = json.loads(stream.read())
        except (FileNotFoundError, ValueError, OSError):
            return []
        return [h for h in found if isinstance(h, str)] if isinstance(found, list) else []

    def write_signed(self, path: str, content: bytes) -> None:
        """The HMAC first (with the previous one), then the file."""
        snapshot = DELETES.snapshot_begins() if SNAPSHOT.fullmatch(path.rsplit("/", 1)[-1]) else None
        hmacs = [*self._hmacs(path)[-1:], signature(path, content)]
        with self.inner.open_output_stream(path + SUFFIX) as stream:
            stream.write(json.dumps(hmacs).encode())
        with self.inner.open_output_stream(path) as stream:
            stream.write(content)
        if snapshot is not None:
            DELETES.snapshot_done(snapshot)

    def read_checked(self, path: str) -> bytes:
        with self.inner.open_input_stream(path) as stream:
            content = stream.read()
        if not any(hmac.compare_digest(h, signature(path, content)) for h in self._hmacs(path)):
            raise ResumeRefused(f"{path} under the storage was not written by a focustune driver holding the key "
                                f"{key_path()} (its signature is missing or does not match); nothing of it was "
                                "loaded. Resume with the key of the driver that ran the sweep, or start afresh "
                                "(another --experiment or storage)")
        return content

    # ---------------------------------------------------------------- pyarrow's handler interface
    def get_type_name(self) -> str:
        return f"focustune-signed+{self.inner.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def equals(self, other: Any) -> bool:
        return isinstance(other, SignedFiles) and self.inner.equals(other.inner)

    def get_file_info(self, paths: list[str]) -> list[fs.FileInfo]:
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector: fs.FileSelector) -> list[fs.FileInfo]:
        return self.inner.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        if CHECKPOINT_FOLDER.fullmatch(path.rstrip("/").rsplit("/", 1)[-1]):
            DELETES.ask(self.inner, path)
        else:
            self.inner.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self.inner.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self.inner.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        if signed(dest):
            self.write_signed(dest, self.read_checked(src) if signed(src) else self._read(src))
            self.inner.delete_file(src)
        else:
            self.inner.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        if signed(dest):
            self.write_signed(dest, self.read_checked(src) if signed(src) else self._read(src))
        else:
            self.inner.copy_file(src, dest)

    def _read(self, path: str) -> bytes:
        with self.inner.open_input_stream(path) as stream:
            return stream.read()

    def open_input_stream(self, path: str) -> Any:
        if signed(path):
            return pa.BufferReader(self.read_checked(path))
        return self.inner.open_input_stream(path, compression=None)

    def open_input_file(self, path: str) -> Any:
        if signed(path):
            return pa.BufferReader(self.read_checked(path))
        return self.inner.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        if signed(path):
            return pa.PythonFile(_SigningWriter(self, path), mode="w")
        return self.inner.open_output_stream(path, compression=None, metadata=metadata)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.inner.open_append_stream(path, compression=None, metadata=metadata)


class DeferredDeletes:
    """Checkpoint folders Tune asked to delete, deleted once two snapshot uploads that began after the
    request have completed (Tune uploads one snapshot at a time, and takes the next one after the
    previous upload ended). One per process: Tune's checkpoint manager deletes on the driver, through
    filesystem objects unpickled from the trials' reports."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._begun = 0  # snapshot uploads begun so far
        self._pending: list[tuple[int, fs.FileSystem, str]] = []  # (uploads begun when asked, where, path)

    def ask(self, files: fs.FileSystem, path: str) -> None:
        with self._lock:
            self._pending.append((self._begun, files, path))

    def snapshot_begins(self) -> int:
        with self._lock:
            self._begun += 1
            return self._begun

    def snapshot_done(self, number: int) -> None:
        """Snapshot upload ``number`` completed: delete what was asked before upload ``number - 1`` began."""
        with self._lock:
            due = [(files, path) for begun, files, path in self._pending if begun <= number - 2]
            self._pending = [p for p in self._pending if p[0] > number - 2]
        for files, path in due:
            _delete(files, path)

    def flush(self) -> None:
        """Delete everything asked for (the run is over: its last snapshot is uploaded)."""
        with self._lock:
            due, self._pending = [(files, path) for _, files, path in self._pending], []
        for files, path in due:
            _delete(files, path)

    def pending(self) -> list[str]:
        with self._lock:
            return [path for _, _, path in self._pending]


def _delete(files: fs.FileSystem, path: str) -> None:
    try:
        files.delete_dir(path)
    except FileNotFoundError:  # gone already (a resumed driver's own request)
        pass


DELETES = DeferredDeletes()


class _SigningWriter:
    """A file object collecting what Tune writes; on close, written signed (:meth:`SignedFiles.write_signed`)."""

    def __init__(self, files: SignedFiles, path: str):
        self.files, self.path, self.closed = files, path, False
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        return len(chunk)

    def tell(self) -> int:
        return sum(len(p) for p in self.parts)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.files.write_signed(self.path, b"".join(self.parts))


def with_retries(files: fs.FileSystem) -> fs.FileSystem:
    """An S3 filesystem with the same options and :data:`S3_ATTEMPTS` attempts per request; others as they are."""
    if not isinstance(files, fs.S3FileSystem):
        return files
    options = files.__reduce__()[1][0]
    return fs.S3FileSystem(**{**options, "retry_strategy": fs.AwsDefaultS3RetryStrategy(S3_ATTEMPTS)})


def storage(location: str) -> tuple[fs.FileSystem, str]:
    """Tune's storage for ``location`` (a local folder or a storage URI): its signing filesystem and path."""
    if "://" in location:
        inner, path = fs.FileSystem.from_uri(location)
    else:
        inner, path = fs.LocalFileSystem(), location
    return fs.PyFileSystem(SignedFiles(inner)), path


def check_experiment(files: fs.FileSystem, path: str) -> None:
    """Refuse (:class:`ResumeRefused`) the Tune experiment at ``path`` unless every pickle Tune loads
    from its top level on resume carries this driver's signature; read before Tune reads any."""
    handler = files.handler
    for info in files.get_file_info(fs.FileSelector(path)):
        if info.type == fs.FileType.File and signed(info.path):
            handler.read_checked(info.path)


def fitted(tuner: Any) -> Any:
    """``tuner.fit()``'s results; then the checkpoint folders still waiting are deleted (Tune uploaded
    its last snapshot before ``fit`` returned)."""
    results = tuner.fit()
    DELETES.flush()
    return results
