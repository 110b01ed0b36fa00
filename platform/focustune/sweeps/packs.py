"""Packed trials in a sweep (``--pack K``): every trial stays a Tune trial of its own while K of them
train in one process as one stacked model (:class:`~focustune.training.packing.Pack`).

How a pack maps onto Tune's trials:

* a packed trial's trainable (:func:`run_packed_trial`) holds no CPU (:data:`MEMBER_RESOURCES`): it
  asks the sweep's :class:`PackCoordinator` (one named actor per driver) for a place. The coordinator
  gives it a :class:`PackWorker` of its group (trials of one study with one model, head and
  precision: :func:`pack_group`) that has fewer than K members, or starts a new worker, which
  holds the resources of one unpacked trial (``--cpus-per-trial``, ``--gpus-per-trial``);
* a worker trains its members' epochs together: once every member has asked for its next epoch (or
  :data:`ROUND_WAIT_S` after the first one asked) one ``Pack.run_epoch`` trains those that asked, and
  each gets back its own report and checkpoint, which its trainable hands to Tune (``tune.report``).
  So a member is its own Tune trial, its own Optuna trial and its own MLflow run, and it reports and
  checkpoints what an unpacked trial would (plus ``pack_size`` per epoch and the ``focustune.pack`` tag);
* Tune's scheduler decides on each member's reports as on any trial's. A member that ASHA stops (or
  that ends, fails or is restarted) reaches :class:`PackDepartures`, a Tune callback, which tells the
  coordinator, which drops the member from its worker: its pack-mates train on, and the next trial
  takes its place. A worker whose members have all left is ended, which frees its resources;
* a resumed trial joins a pack with its Tune checkpoint (the trainer's own file), so a killed
  driver's packed sweep resumes as an unpacked one does.

The sweep's searcher keeps K trials per trial slot live (``max_concurrent``), the scheduler of the
slots is Ray's (one worker per slot's resources).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
from ray import tune

#: What a packed trial's own Tune actor holds: no CPU (its pack's worker holds the trial resources);
#: a token of memory, since Ray refuses an empty placement-group bundle.
MEMBER_RESOURCES = {"cpu": 0.0, "memory": float(2**20)}
#: Seconds a worker waits, after a member asked for its next epoch, for the others to ask too (a
#: member stopped by the scheduler never asks; its departure usually arrives well before).
ROUND_WAIT_S = 5.0
_POLL_S = 0.02
#: The largest ``--pack`` (members of one process; beyond it one step's stacked batch is unwieldy).
MAX_PACK = 64


def coordinator_name(sweep_id: str) -> str:
    """The name of a sweep's coordinator (the same for every driver of the sweep, so that the Tune
    callback a resumed driver restores still finds it; each driver's Ray job has its own namespace)."""
    return f"focustune-packs-{sweep_id}"


def pack_group(config: dict[str, Any]) -> tuple[Any, ...]:
    """What trials must share to train in one pack: their study, model, head and precision. Members
    with different batch sizes share the process but not a stacked step (each batch shape is a stack
    of its own); grouping by batch size as well would start more packs than there are trial slots."""
    from focustune.records import STUDY_KEY
    from focustune.sweeps.trial_config import resolve_trial

    train = resolve_trial(config).train_config
    return (config[STUDY_KEY], train.model, train.head, train.amp, train.deterministic)


def folder_files(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path (a checkpoint on its way between processes)."""
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_files(folder: str | Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@ray.remote(num_cpus=0)
class PackCoordinator:
    """Places each packed trial in a worker of its group with room, starting workers as needed; drops
    a departed trial from its worker and ends a worker left empty."""

    def __init__(self, driver: int, size: int, cpus: float, gpus: float, settings: dict[str, Any]):
        self.driver, self.size, self.cpus, self.gpus, self.settings = driver, size, cpus, gpus, settings
        self.workers: dict[str, Any] = {}  # label -> actor handle
        self.groups: dict[str, tuple[Any, ...]] = {}  # label -> its group
        self.counts: dict[str, int] = {}  # label -> members placed (joining or training)
        self.members: dict[str, tuple[str, int]] = {}  # trial id -> (label, index in its pack)
        self.started = 0

    def _place(self, group: tuple[Any, ...]) -> str:
        for label, own in self.groups.items():
            if own == group and self.counts[label] < self.size:
                return label
        label, self.started = f"pack-{self.driver}.{self.started}", self.started + 1  # unique in the sweep
        self.workers[label] = PackWorker.options(  # type: ignore[attr-defined]
            num_cpus=self.cpus, num_gpus=self.gpus).remote(label, self.settings)
        self.groups[label], self.counts[label] = group, 0
        return label

    async def join(self, trial_id: str, config: dict[str, Any], checkpoint: dict[str, bytes] | None,
                   began: float) -> tuple[Any, int, str]:
        """A place for trial ``trial_id`` (resumed from ``checkpoint`` files): its worker, index and label."""
        self._leave(trial_id)  # a restarted trial's earlier attempt, if its departure has not come yet
        label = self._place(pack_group(config))
        self.counts[label] += 1  # reserved before awaiting the worker
        try:
            index = await self.workers[label].join.remote(config, checkpoint, began)
        except Exception:  # any failure to join is the trial's to report (re-raised); its place is freed
            self._release(label)
            raise
        self.members[trial_id] = (label, index)
        return self.workers[label], index, label

    def depart(self, trial_id: str) -> None:
        """Trial ``trial_id`` left Tune (ended, stopped, failed or restarting)."""
        self._leave(trial_id)

    def retire(self, label: str) -> None:
        """Worker ``label`` failed: no new member goes there (its members depart as Tune restarts them)."""
        self.groups[label] = ("retired", label)

    def _leave(self, trial_id: str) -> None:
        if trial_id not in self.members:
            return
        label, index = self.members.pop(trial_id)
        if self.counts[label] > 1:
            self.workers[label].leave.remote(index)
        self._release(label)

    def _release(self, label: str) -> None:
        self.counts[label] -= 1
        if self.counts[label] == 0:  # nobody left or joining: its resources go back
            ray.kill(self.workers.pop(label))
            del self.groups[label], self.counts[label]

    def labels(self) -> dict[str, int]:
        """Each live worker's member count (for tests and the live view)."""
        return dict(self.counts)


@ray.remote
class PackWorker:
    """One pack's process: builds each member's trainer, trains the members' epochs together and
    hands each its report and checkpoint files."""

    def __init__(self, label: str, settings: dict[str, Any]):
        from focustune.sweeps.trainable import ResourceUse, prepare_process

        self.label, self.settings = label, settings
        self.device = settings["device"]
        prepare_process(settings["cpus"], self.device)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.usage = ResourceUse(settings["cpus"], self.device == "cuda") if settings["system_metrics"] else None
        self.executor = ThreadPoolExecutor(max_workers=1)  # the pack is used by one thread at a time
        self.pack: Any = None
        self.datasets: dict[str, Any] = {}
        self.attempts: dict[int, dict[str, Any]] = {}
        self.live: set[int] = set()
        self.waiting: dict[int, asyncio.Future] = {}
        self.rounds: asyncio.Task | None = None

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def join(self, config: dict[str, Any], checkpoint: dict[str, bytes] | None, began: float) -> int:
        index = await self._run(self._join, config, checkpoint, began)
        self.live.add(index)
        return index

    def _join(self, config: dict[str, Any], checkpoint: dict[str, bytes] | None, began: float) -> int:
        from focustune.shared_store import SharedStore
        from focustune.sweeps.trainable import trial_dataset
        from focustune.sweeps.trial_config import resolve_trial
        from focustune.training import Trainer
        from focustune.training.packing import Pack

        trial = resolve_trial(config)
        if trial.dataset not in self.datasets:
            self.datasets[trial.dataset] = trial_dataset(trial.dataset, self.settings["dataset_refs"])
        store = SharedStore(self.settings["gan_store"], log=print) if self.settings["gan_store"] else None
        trainer = Trainer(trial.build_method(), trial.train_config, self.datasets[trial.dataset], seed=trial.seed,
                          device=self.device, gan_store=store)
        if self.pack is None:
            self.pack, index = Pack([trainer]), 0
        else:
            index = self.pack.add(trainer)
        if checkpoint:
            with tempfile.TemporaryDirectory() as folder:
                write_files(folder, checkpoint)
                self.pack.load_checkpoint(index, folder)
        self.attempts[index] = {"node_id": self.node_id, "start_epoch": trainer.epoch, "busy_since": began}
        return index

    async def next_epoch(self, index: int) -> dict[str, Any]:
        """Member ``index``'s next epoch, trained with the pack's next round: ``result`` (Tune's result
        dict), ``checkpoint`` (files, None for a diverged member) and ``last`` (the member is done)."""
        future = asyncio.get_running_loop().create_future()
        self.waiting[index] = future
        if self.rounds is None or self.rounds.done():
            self.rounds = asyncio.create_task(self._rounds())
        return await future

    async def leave(self, index: int) -> None:
        """Member ``index`` left (its trial stopped): the others no longer wait for it."""
        self.live.discard(index)
        if (future := self.waiting.pop(index, None)) is not None:
            future.cancel()
        await self._run(self._remove, index)

    def _remove(self, index: int) -> None:
        if self.pack is not None and index in self.pack.members:
            self.pack.remove(index)
        self.attempts.pop(index, None)

    async def _rounds(self) -> None:
        while self.waiting:
            first = time.monotonic()
            while not self.live <= set(self.waiting) and time.monotonic() - first < ROUND_WAIT_S:
                await asyncio.sleep(_POLL_S)
            ready, self.waiting = self.waiting, {}
            try:
                outcomes = await self._run(self._train, sorted(ready))
            except Exception as error:  # noqa: BLE001 - not caught: handed to every member's trial, which raises it
                for future in ready.values():
                    future.set_exception(error)
                continue
            for index, future in ready.items():
                if outcomes[index]["last"]:
                    self.live.discard(index)
                if not future.done():
                    future.set_result(outcomes[index])

    def _train(self, indices: list[int]) -> dict[int, dict[str, Any]]:
        from focustune.records import PACK_SIZE
        from focustune.sweeps.trainable import diverged_report, trial_report

        records = self.pack.run_epoch(only=indices)
        extra = {**(self.usage.sample() if self.usage else {}), PACK_SIZE: float(len(indices))}
        outcomes: dict[int, dict[str, Any]] = {}
        for index in indices:
            member, attempt = self.pack.members[index], {**self.attempts[index], "pack": self.label}
            if member.failure is not None:
                report = diverged_report(member.trainer, member.failure, **attempt, busy_until=time.time())
                outcomes[index] = {"result": report.to_result(), "checkpoint": None, "last": True}
            elif index in records:
                with member.own_streams():
                    report = trial_report(member.trainer, records[index], extra, **attempt, busy_until=math.nan)
                with tempfile.TemporaryDirectory() as folder:
                    self.pack.save_checkpoint(index, folder)
                    files = folder_files(folder)
                outcomes[index] = {"result": {**report.to_result(), "busy_until": time.time()},
                                   "checkpoint": files, "last": member.trainer.finished}
            else:  # dropped while it waited (its trial is being stopped)
                outcomes[index] = {"result": None, "checkpoint": None, "last": True}
            if outcomes[index]["last"]:
                self._remove(index)
        return outcomes


def run_packed_trial(config: dict[str, Any], *, coordinator: str) -> None:
    """A packed trial's Tune trainable: join a pack (with Tune's checkpoint when resumed), then report
    each epoch the pack trains for it, with its checkpoint, until it is done or Tune stops it."""
    began = time.time()
    files = None
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder:
            files = folder_files(folder)
    worker, index, label = ray.get(ray.get_actor(coordinator).join.remote(
        tune.get_context().get_trial_id(), config, files, began))
    while True:
        try:
            outcome = ray.get(worker.next_epoch.remote(index))
        except ray.exceptions.RayError:  # the pack failed: no new trial goes there; this one raises (Tune retries)
            ray.get_actor(coordinator).retire.remote(label)
            raise
        if outcome["result"] is None:
            return
        if outcome["checkpoint"] is None:
            tune.report(outcome["result"])
        else:
            with tempfile.TemporaryDirectory() as folder:
                write_files(folder, outcome["checkpoint"])
                tune.report(outcome["result"], checkpoint=tune.Checkpoint.from_directory(folder))
        if outcome["last"]:
            return


class PackDepartures(tune.Callback):
    """Tells the coordinator (by its name) when a packed trial leaves Tune: ended, stopped early by
    the scheduler, failed, or restarting after a failure. Its pack drops it and trains on."""

    def __init__(self, coordinator: str):
        self.coordinator = coordinator

    def _depart(self, trial: Any) -> None:
        try:
            ray.get_actor(self.coordinator).depart.remote(trial.trial_id)
        except ValueError:  # no coordinator (Ray shutting down): no pack to tell
            pass

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._depart(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._depart(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._depart(trial)


def start_coordinator(name: str, driver: int, size: int, cpus: float, gpus: float, settings: dict[str, Any]) -> Any:
    """The coordinator of the sweep's ``driver``-th driver run (its packs are ``pack-DRIVER.N``); keep
    the handle: the coordinator and its workers live as long."""
    return PackCoordinator.options(name=name).remote(driver, size, cpus, gpus, settings)  # type: ignore[attr-defined]
