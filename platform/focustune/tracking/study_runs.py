"""The sweep's MLflow side besides its trials: the experiment, one parent run per (dataset, method)
study (its params, best configuration, seed re-runs' means and status), runs a killed driver left
open, and the study runs' views (:mod:`focustune.tracking.workbench`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from focustune.tracking import workbench
from focustune.tracking.batches import log_batched
from focustune.tracking.trial_runs import TrialRuns
from focustune.credentials import masked
from focustune.tracking.operations import is_transport_error, mlflow_client
from focustune.records import TRIAL_ID, ParetoRecord, StudyRecord
from focustune.tracking_schema import (BEST_OBJECTIVE, BEST_PARAM_PREFIX, CHOSEN_TRIAL_PARAM, FINISHED_TRIALS,
                                       KIND_STUDY, LOST_ON_RESTART, OBJECTIVES_PARAM, PARETO_FIGURE_FILE,
                                       PARETO_POINTS_FILE, PARETO_TABLE_FILE, SEEDS_MEAN_PREFIX, SELECTION_RULE_PARAM,
                                       TAG, UTILISATION, source_tags, split_study_key)

log = logging.getLogger(__name__)


class StudyTracking:
    """The sweep's MLflow side: the experiment, one parent run per (dataset, method) study."""

    def __init__(self, spec: Any, state: Any):
        self.spec, self.state = spec, state
        self.client = mlflow_client(spec.tracking)
        experiment = self.client.get_experiment_by_name(spec.experiment)
        self.experiment_id = (experiment.experiment_id if experiment is not None
                              else self.client.create_experiment(spec.experiment))
        self.inputs: dict[str, dict[str, str]] = {}
        workbench.mark_training_experiment(self.client, self.experiment_id)

    def use_datasets(self, datasets: dict[str, Any]) -> None:
        """Describe the sweep's datasets (by study label) as MLflow dataset inputs of its runs, and
        the experiment by its datasets and methods."""
        self.inputs = {label: workbench.dataset_record(label, d) for label, d in datasets.items()}
        workbench.describe_experiment(self.client, self.experiment_id, list(datasets), self.spec.methods)

    @property
    def sweep_tags(self) -> dict[str, str]:
        """Tags of every run of this sweep (a run adds its study, kind, dataset and method)."""
        return {"sweep_id": self.state.data["sweep_id"], "epochs": str(self.spec.epochs),
                "scheduler": self.spec.scheduler}

    def parent_run(self, key: str, data: dict[str, Any]) -> str:
        """The study's parent run, created once and remembered in the sweep state; ``data`` is the
        dataset's summary (sizes, training class counts, imbalance profile), logged as ``data.*``."""
        study = self.state.study(key)
        if study.parent_run_id is None:
            dataset, method = split_study_key(key)
            tags = {TAG + k: v for k, v in {**self.sweep_tags, "study": key, "kind": KIND_STUDY, "dataset": dataset,
                                            "method": method}.items()}
            run = self.client.create_run(self.experiment_id, tags={**tags, **source_tags("sweep")},
                                         run_name=f"{dataset}-{method}")
            study.parent_run_id = run.info.run_id
            self.state.save()
            log_batched(self.client, run.info.run_id, params={
                "method": method, "dataset": dataset, "trials": self.spec.trials, "epochs": self.spec.epochs,
                "seeds": self.spec.seeds, "scheduler": self.spec.scheduler, **self._objective_params,
                **{f"data.{k}": data.get(k) for k in ("sizes", "train_class_counts", "imbalance", "source")}})
            if dataset in self.inputs:
                self.client.log_inputs(run.info.run_id, datasets=[workbench.dataset_input(self.inputs[dataset])])
        return study.parent_run_id

    @property
    def _objective_params(self) -> dict[str, str]:
        """With a selection rule: the objectives and the rule (none on the one-objective path)."""
        rule = self.spec.selection_rule
        if rule is None:
            return {}
        return {OBJECTIVES_PARAM: ",".join(self.spec.objective_names), SELECTION_RULE_PARAM: str(rule)}

    def log_front(self, parent: str, key: str, pareto: ParetoRecord) -> None:
        """The study's Pareto front on its run: every point (JSON), the front's table (Markdown), the
        figure (:mod:`focustune_analysis.pareto`) and the chosen point's trial id (param)."""
        from focustune_analysis.pareto import front_figure, front_markdown, points_frame

        record = asdict(pareto)
        self.client.log_dict(parent, record, PARETO_POINTS_FILE)
        frame = points_frame(record["points"], pareto.objectives, pareto.chosen)
        self.client.log_text(parent, front_markdown(frame, pareto.objectives, pareto.selection_rule,
                                                    pareto.selection_refused), PARETO_TABLE_FILE)
        fig = front_figure(frame, pareto.objectives, f"{key}: Pareto front")
        if fig is not None:
            self.client.log_figure(parent, fig, PARETO_FIGURE_FILE)
        if pareto.chosen:
            log_batched(self.client, parent, params={CHOSEN_TRIAL_PARAM: pareto.chosen})

    def trial_runs(self, parents: dict[str, str],
                   params_for: Callable[[dict[str, Any]], dict[str, Any]]) -> TrialRuns:
        """Each trial as a run under its study's parent run, with ``params_for(config)`` as its params."""
        return TrialRuns(self.spec.tracking, self.experiment_id, parents, self.sweep_tags, params_for,
                         inputs=self.inputs)

    def log_best(self, parent: str, study: StudyRecord, best_params: dict[str, Any]) -> None:
        """The study's best objective, finished-trial count and best configuration (``best_params``:
        every resolved hyperparameter, as ``best.*`` params) on its run."""
        log_batched(self.client, parent,
                    {BEST_OBJECTIVE: float(study.best_objective or math.nan), FINISHED_TRIALS: float(study.finished)},
                    params={f"{BEST_PARAM_PREFIX}{k}": v for k, v in best_params.items()})

    def close_orphans(self, known_trials: set[str]) -> int:
        """End as KILLED, tagged ``lost_on_restart``, the runs of this sweep's trials that a killed
        driver's last Tune snapshot never recorded (Tune did that work again as new trials), whether
        left RUNNING or ended before the snapshot caught up: each trial keeps exactly one FINISHED
        run. Returns how many were closed."""
        query = (f"tags.`{TAG}sweep_id` = '{self.state.data['sweep_id']}' and tags.`{TAG}kind` != '{KIND_STUDY}'")

        def close() -> int:  # idempotent: repeated whole after an outage
            orphans = [r for r in self.client.search_runs([self.experiment_id], filter_string=query, max_results=5000)
                       if r.data.tags.get(TAG + TRIAL_ID) not in known_trials
                       and r.info.status in ("RUNNING", "FINISHED")]
            for run in orphans:
                self.client.set_tag(run.info.run_id, TAG + LOST_ON_RESTART, "true")
                self.client.set_terminated(run.info.run_id, status="KILLED")
            return len(orphans)

        return self._when_reachable(close)

    def _when_reachable(self, call: Callable[[], Any], wait_s: float = 120.0) -> Any:
        """``call()``, waited out through an MLflow outage of up to ``wait_s`` (the search may end while
        the server restarts); any other error at once."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return call()
            except Exception as exc:  # sorted below: only an outage is waited out
                if not is_transport_error(exc) or time.monotonic() > deadline:
                    raise
                log.warning("MLflow at %s unreachable; trying again", masked(self.spec.tracking))
                time.sleep(2.0)

    def close_parent(self, parent: str, study: StudyRecord, usage: dict[str, Any], status: str = "FINISHED") -> None:
        """Seed re-runs' mean test metrics and the sweep's utilisation on the study run; then end it."""
        rows = [r.scores for r in study.completed_reruns]
        metrics = {}
        for key in sorted({k for r in rows for k in r if k.startswith("test_")}):
            values = [float(value) for r in rows if (value := r.get(key)) is not None]
            if values:
                metrics[f"{SEEDS_MEAN_PREFIX}{key}"] = sum(values) / len(values)
        if usage.get("overall") is not None:
            metrics[UTILISATION] = float(usage["overall"])
        if metrics:
            log_batched(self.client, parent, metrics)
        self.client.set_terminated(parent, status=status)

    def log_study_views(self, parents: dict[str, str]) -> None:
        """Each study run's description, summary and figures (:mod:`focustune.tracking.workbench`); an
        unreachable MLflow only costs them (a warning: ``--resume`` adds them later)."""
        try:
            workbench.log_study_views(self.client, self.spec.experiment, self.spec.tracking, parents,
                                      {key: self.state.study(key) for key in parents}, self.spec.fixed)
        except Exception as exc:  # sorted below: only an outage is expected here
            if not is_transport_error(exc):
                raise
            log.warning("MLflow at %s unreachable: the study runs' descriptions and figures were not logged "
                        "(run the same command with --resume to add them): %s", masked(self.spec.tracking), exc)
