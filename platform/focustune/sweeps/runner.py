"""A benchmark sweep: datasets x methods, one Optuna study per pair, all studies advancing at once.

One Tune run holds every study. Its searcher (:class:`~focustune.sweeps.search.MultiStudySearch`)
gives each free slot to the study with the fewest started trials and starts a study's seed re-runs
as soon as its own search has ended; early stopping is per study and waits until the method has
acted (:class:`~focustune.sweeps.schedulers.PerStudyASHA`). Every study gets the same trial budget,
epochs, scheduler and seeds; selection uses validation only. ``sweep.json`` under the storage path
and Tune's experiment folder let ``--resume`` continue after the driver dies.

The request is :mod:`~focustune.sweeps.spec`, checked by :mod:`~focustune.sweeps.preflight`; its
record is :mod:`~focustune.sweeps.state`; Ray is :mod:`~focustune.sweeps.cluster`; what the Tune run
says per study is :mod:`~focustune.sweeps.summaries`; MLflow is :mod:`~focustune.tracking.study_runs`.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from focustune.credentials import masked, remember
from focustune.errors import SweepInterrupted
from focustune.spaces import SearchSpace
from focustune.sweeps.cluster import awaited_resources, init_ray, pend_one_trial_per_slot, slot_count, trial_slots
from focustune.sweeps.preflight import study_grace
from focustune.sweeps.spec import SweepSpec
from focustune.sweeps.state import SweepState
from focustune.sweeps.studies import utilisation
from focustune.sweeps.summaries import busy_intervals, study_summaries, unfinished
from focustune.records import OBJECTIVE, SEED_KEY, STUDY_KEY, StudyRecord
from focustune.sweeps.trial_config import SEARCH_SEED, resolve_trial, tracked_params
from focustune.tracking_schema import split_study_key, study_key

# A trial worker process is kept for the next trial of the same resources: a fresh one costs
# ~4 s here (torch, scikit-learn, focustune imports), more than a small trial's training.
# run_trial builds its trainer, seeds and thread count on every call, so nothing leaks between trials.
REUSE_WORKERS = True
TUNE_RUN = "benchmark"  # the one Tune experiment of a sweep, under its storage path
GAN_STORE = "gans"  # the sweep's GANs (mdgan; each trained once, found again by every trial), under its storage path
#: Checkpoints kept per trial. Tune asks to delete older ones before the snapshot naming a newer one
#: is uploaded; tune_storage.DeferredDeletes holds each deletion until no stored snapshot names it. Tune
#: also forces a snapshot every KEPT_CHECKPOINTS checkpoints of a trial: three keeps those rare.
KEPT_CHECKPOINTS = 3


class Sweep:
    """Run ``spec`` over loaded datasets (by study label): every (dataset, method) study at once."""

    def __init__(self, spec: SweepSpec, spaces: dict[str, SearchSpace], out: Any = sys.stdout):
        self.spec, self.spaces, self.out = spec, spaces, out
        self.coordinator: Any = None  # with --pack: the pack coordinator actor, alive while this handle is
        remember(spec.tracking, spec.optuna_url)  # what Tune's restored experiment holds masked (credentials)
        self.state = SweepState.open(spec)

    def _print(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def keys(self, datasets: dict[str, Any]) -> list[str]:
        return [study_key(name, method) for name in datasets for method in self.spec.methods]

    def run(self, datasets: dict[str, Any], warm_starts: dict[str, list[dict]] | None = None) -> dict[str, StudyRecord]:
        """Run (or resume) the sweep; returns per study key its record (best config, re-runs, model)."""
        import ray

        from focustune.tracking.study_runs import StudyTracking
        from focustune.sweeps.trainable import dataset_to_arrays

        init_ray(self.spec.address)
        if awaited := awaited_resources(self.spec.cpus_per_trial, self.spec.gpus_per_trial):
            self._print(awaited)
        refs = {name: ray.put(dataset_to_arrays(d)) for name, d in datasets.items()}  # once per sweep
        self._start_packs(refs)
        tracking = StudyTracking(self.spec, self.state)
        tracking.use_datasets(datasets)
        keys = self.keys(datasets)
        parents = {key: tracking.parent_run(key, datasets[split_study_key(key)[0]].summary()) for key in keys}
        if not self.state.data.get("done"):
            self._search(keys, refs, tracking, parents, warm_starts or {})
        self._deliver(parents, datasets)
        self._close(tracking, parents)
        return {key: self.state.study(key) for key in keys}

    def _search(self, keys: list[str], refs: dict[str, Any], tracking: Any, parents: dict[str, str],
                warm_starts: dict[str, list[dict]]) -> None:
        """Run the Tune run (or resume it), then record each study's summary and best configuration."""
        from focustune.sweeps.search import TrialLedger

        slots = trial_slots(self.spec.cpus_per_trial, self.spec.gpus_per_trial, self.spec.max_concurrent,
                            self.spec.pack)
        self.state.add_attempt(slots)  # a resumed sweep's utilisation counts every driver's nodes
        TrialLedger.begin()
        results = self._fit(keys, refs, tracking, parents, slots, warm_starts)
        tracking.close_orphans({str(r.metrics.get("trial_id")) for r in results if r.metrics})
        summaries = study_summaries(keys, results, self.spec.objective_names, self.spec.selection_rule)
        for key, summary in summaries.items():
            self.state.studies[key] = replace(self.state.study(key), **summary)
        self.state.data["utilisation"] = utilisation(busy_intervals(results), slots, self.state.attempts())
        self.state.save()
        if left := unfinished(TrialLedger.live_at_last_step, summaries, self.spec.trials, self.spec.seeds):
            raise SweepInterrupted(f"the sweep was interrupted ({'; '.join(left)}); its state is kept: run the "
                                   "same command with --resume to go on")
        for key in keys:
            study = self.state.study(key)
            if study.pareto is not None:  # a selection rule: the front, on the study run
                tracking.log_front(parents[key], key, study.pareto)
            if study.best_config is not None:
                best = resolve_trial({**study.best_config, STUDY_KEY: key})
                tracking.log_best(parents[key], study, best.tracked_params)
        self.state.data["done"] = True
        self.state.save()

    def _deliver(self, parents: dict[str, str], datasets: dict[str, Any]) -> None:
        """Per study: the chosen configuration file and the selected model (:mod:`focustune.sweeps.delivery`)."""
        from focustune.sweeps.delivery import deliver_models

        deliver_models(self.spec, self.state, parents, datasets, self._print)

    def _close(self, tracking: Any, parents: dict[str, str]) -> None:
        """End every study run (FAILED without a best configuration), then log the study views."""
        usage = self.state.data.get("utilisation", {})
        for key, parent in parents.items():
            study = self.state.study(key)
            tracking.close_parent(parent, study, usage, status="FINISHED" if study.best_config else "FAILED")
        tracking.log_study_views(parents)

    @property
    def _pack_name(self) -> str:
        from focustune.sweeps.packs import coordinator_name

        return coordinator_name(self.state.data["sweep_id"])

    def _trial_settings(self, refs: dict[str, Any]) -> dict[str, Any]:
        """What every trial's training needs besides its config: the datasets' object refs, its CPUs,
        device, system metrics and the sweep's GAN store."""
        spec = self.spec
        device = "cuda" if spec.gpus_per_trial > 0 else "cpu"
        return {"dataset_refs": refs, "cpus": spec.cpus_per_trial, "device": device,
                "system_metrics": spec.system_metrics, "gan_store": f"{spec.storage_path}/{GAN_STORE}"}

    def _start_packs(self, refs: dict[str, Any]) -> None:
        """With ``--pack K`` > 1: this driver's pack coordinator (:mod:`focustune.sweeps.packs`)."""
        if self.spec.pack > 1:
            from focustune.sweeps.packs import start_coordinator

            driver = len(self.state.attempts())  # this driver run's number (0, then one per --resume)
            self.coordinator = start_coordinator(self._pack_name, driver, self.spec.pack, self.spec.cpus_per_trial,
                                                 self.spec.gpus_per_trial, self._trial_settings(refs))

    def _trainable(self, refs: dict[str, Any]) -> Any:
        """The trial function with the datasets' object refs and the trial resources; packed trials
        (``--pack``) hold none themselves, their pack's worker holds them."""
        from ray import tune

        spec = self.spec
        if spec.pack > 1:
            from focustune.sweeps.packs import MEMBER_RESOURCES, run_packed_trial

            return tune.with_resources(tune.with_parameters(run_packed_trial, coordinator=self._pack_name),
                                       MEMBER_RESOURCES)
        from focustune.sweeps.trainable import run_trial

        return tune.with_resources(tune.with_parameters(run_trial, **self._trial_settings(refs)),
                                   {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})

    def _fit(self, keys: list[str], refs: dict[str, Any], tracking: Any, parents: dict[str, str],
             slots: dict[str, int], warm_starts: dict[str, list[dict]]) -> Any:
        """Tune's results of the sweep: a new Tune run, or the one under the storage path resumed (with
        the callbacks, searcher and scheduler its experiment checkpoint holds)."""
        from ray import tune

        from focustune.sweeps import tune_storage
        from focustune.sweeps.progress import SweepProgress, use_attempts
        from focustune.sweeps.search import TrialLedger
        from focustune.sweeps.tune_tracking import TrackingCallback

        pend_one_trial_per_slot(slots)
        use_attempts(self.state.attempts())  # the live view's utilisation, as the final one
        trainable = self._trainable(refs)
        files, root = tune_storage.storage(self.spec.storage_path)  # Tune's pickles signed, checked on resume
        if tune.Tuner.can_restore(f"{root}/{TUNE_RUN}", storage_filesystem=files):
            tune_storage.check_experiment(files, f"{root}/{TUNE_RUN}")
            self._print(f"resuming {len(keys)} studies from {masked(self.spec.storage_path)}/{TUNE_RUN}")
            restored = tune.Tuner.restore(f"{root}/{TUNE_RUN}", trainable=trainable, resume_errored=True,
                                          storage_filesystem=files)
            return tune_storage.fitted(restored)
        spec = self.spec
        search, scheduler = self._searcher(keys, warm_starts, slots), self._scheduler(keys)
        budgets = {key: (spec.trials, spec.seeds) for key in keys}
        runs = tracking.trial_runs(parents, params_for=tracked_params)
        callbacks = [TrialLedger(), TrackingCallback(runs), SweepProgress(budgets, slots, self.out)]
        if spec.pack > 1:
            from focustune.sweeps.packs import PackDepartures

            callbacks.append(PackDepartures(self._pack_name))
        packed = f", {spec.pack} per pack" if spec.pack > 1 else ""
        self._print(f"{len(keys)} studies at once: {spec.trials} search trial(s) x {spec.epochs} epoch(s) each, "
                    f"then {spec.seeds} seed re-run(s); {slot_count(slots)} trial "
                    f"slot(s){packed}; Optuna studies in {masked(spec.optuna_url)}")
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            metric=OBJECTIVE, mode="max", search_alg=search, scheduler=scheduler, num_samples=-1,
            reuse_actors=REUSE_WORKERS),  # the searcher keeps to --max-concurrent (search.MultiStudySearch)
            run_config=tune.RunConfig(name=TUNE_RUN, storage_path=root, storage_filesystem=files, callbacks=callbacks,
                                      verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=KEPT_CHECKPOINTS)))
        return tune_storage.fitted(tuner)

    def _searcher(self, keys: list[str], warm_starts: dict[str, list[dict]], slots: dict[str, int]) -> Any:
        """One Optuna study per key, every search trial with the fixed values and the search seed.
        Packed trials hold no resources of their own: the searcher keeps K per trial slot live."""
        from focustune.sweeps.search import DefineByRun, MultiStudySearch, study_queue

        spec = self.spec
        fixed = {**spec.fixed_values, SEED_KEY: SEARCH_SEED}
        return MultiStudySearch(
            {key: DefineByRun(self.spaces[key], fixed) for key in keys},
            study_queue(keys, spec.trials, spec.seeds, spec.one_study_at_a_time, spec.objective_names,
                        spec.selection_rule), spec.optuna_url, spec.search_seed,
            warm_starts=warm_starts, objectives=spec.objective_names,
            max_concurrent=spec.max_concurrent or (slot_count(slots) if spec.pack > 1 else None))

    def _scheduler(self, keys: list[str]) -> Any:
        """Per-study ASHA with each method's grace period (``--scheduler asha``; by non-dominated rank
        with several objectives), else None."""
        if self.spec.scheduler != "asha":
            return None
        from focustune.sweeps.schedulers import PerStudyASHA, PerStudyMOASHA

        graces = {key: study_grace(split_study_key(key)[1], self.spec.fixed_values) for key in keys}
        if self.spec.multi_objective:
            return PerStudyMOASHA(graces, max_t=self.spec.epochs, objectives=self.spec.objective_names)
        return PerStudyASHA(graces, max_t=self.spec.epochs)
