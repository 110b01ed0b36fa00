"""Where a sweep keeps its own record, ``sweep.json`` under its storage path, and how files there are
reached: local folders and storage URIs (s3://, gs://, ...) alike, through pyarrow."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from focustune.credentials import masked
from focustune.files import write_atomic
from focustune.records import StudyRecord
from focustune.sweeps.spec import SweepSpec
from focustune.sweeps.studies import Attempt


def filesystem(location: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for a local folder or a storage URI."""
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)
    return fs.LocalFileSystem(), location


def checkpoint_location(checkpoint: Any) -> str:
    """A Tune checkpoint's folder as a local path or a storage URI (s3://, gs://, ...)."""
    from pyarrow import fs

    from focustune.sweeps.tune_storage import SignedFiles

    files = checkpoint.filesystem
    if isinstance(files, fs.PyFileSystem) and isinstance(files.handler, SignedFiles):
        files = files.handler.inner  # Tune's storage (tune_storage); checkpoints themselves are not signed
    if isinstance(files, fs.LocalFileSystem):
        return checkpoint.path
    return f"{files.type_name}://{checkpoint.path}"


def stored_spec(spec: SweepSpec) -> dict[str, Any]:
    """The spec as ``sweep.json`` keeps it: every URI's password masked (:mod:`focustune.credentials`)."""
    data = asdict(spec)
    for key in ("tracking_uri", "optuna_storage", "storage", "address", "warm_start"):
        if isinstance(data.get(key), str):
            data[key] = masked(data[key])
    return data


class SweepState:
    """``sweep.json`` under the storage path: the sweep id, the spec, per study its
    :class:`~focustune.records.StudyRecord`, each driver run's start and trial slots per node
    (``attempts``), and the utilisation."""

    FILE = "sweep.json"

    def __init__(self, location: str, data: dict[str, Any]):
        self.location = location
        self.studies = {key: StudyRecord.from_json(study) for key, study in data.pop("studies", {}).items()}
        self.data = data

    @classmethod
    def exists(cls, spec: SweepSpec) -> bool:
        from pyarrow import fs

        files, path = filesystem(f"{spec.storage_path}/{cls.FILE}")
        return files.get_file_info(path).type != fs.FileType.NotFound

    @classmethod
    def open(cls, spec: SweepSpec) -> SweepState:
        """The sweep's state: read when it exists, else a new one (a fresh sweep id), saved at once."""
        location = f"{spec.storage_path}/{cls.FILE}"
        if cls.exists(spec):
            files, path = filesystem(location)
            with files.open_input_stream(path) as stream:
                return cls(location, json.loads(stream.read().decode()))
        state = cls(location, {"sweep_id": uuid.uuid4().hex[:12], "spec": stored_spec(spec), "studies": {}})
        state.save()
        return state

    def study(self, key: str) -> StudyRecord:
        """The study's record (a new, empty one the first time): change it, then :meth:`save`."""
        return self.studies.setdefault(key, StudyRecord())

    def add_attempt(self, slots: dict[str, int]) -> None:
        """Record (and save) that a driver starts running the sweep now with ``slots`` (per node)."""
        self.data.setdefault("attempts", []).append({"start": time.time(), "slots": dict(slots)})
        self.save()

    def attempts(self) -> list[Attempt]:
        """Every driver run of the sweep so far (the first, then each ``--resume``), oldest first."""
        return [Attempt(float(a["start"]), dict(a["slots"])) for a in self.data.get("attempts", [])]

    def save(self) -> None:
        studies = {key: study.to_json() for key, study in self.studies.items()}
        payload = json.dumps({**self.data, "studies": studies}, indent=2, default=str).encode()
        files, path = filesystem(self.location)
        if "://" in self.location:  # object stores replace whole objects atomically
            with files.open_output_stream(path) as stream:
                stream.write(payload)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, payload)
