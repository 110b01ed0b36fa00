"""What a sweep is asked to do: its datasets, methods, budgets and where it keeps its results.

Plain data (checked by :func:`focustune.sweeps.preflight.validate` before Ray starts); ``sweep.json``
stores it as given (:class:`focustune.sweeps.state.SweepState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focustune.data.options import DataOptions
from focustune.errors import ConfigError
from focustune.objectives import SelectionRule, parse_objectives
from focustune.tracking_schema import default_tracking_uri


@dataclass(kw_only=True)
class DatasetSpec(DataOptions):
    """One dataset of a sweep: its data options and ``name``, the label of its studies (default: the
    loaded dataset's own name)."""

    name: str | None = None


@dataclass
class SweepSpec:
    """Everything a sweep is asked to do (validated by ``preflight.validate`` before Ray starts)."""

    datasets: list[DatasetSpec]
    methods: list[str]
    trials: int = 20
    epochs: int = 30
    seeds: int = 1
    scheduler: str = "none"  # none | asha
    tracking_uri: str | None = None
    experiment: str = "focustune"
    address: str | None = None
    storage: str | None = None
    optuna_storage: str | None = None
    warm_start: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    pack: int = 1  # trials of one study trained together in one process (sweeps.packs)
    wait_for_nodes: bool = False  # on a cluster no node of which fits a trial: wait (an autoscaler adds one)
    resume: bool = False
    space_files: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # hyperparameters set for every trial
    search_seed: int = 0
    max_failures: int = 2
    one_study_at_a_time: bool = False  # the former order, for benchmarks (Python API only)
    register: str | None = None  # registered-model name of the selected models (see sweeps.delivery)
    config_out: str | None = None  # also write the chosen configuration there (tune: best_config.yaml)
    system_metrics: bool = False  # each trial reports its CPU/GPU use per epoch (trainable.ResourceUse)
    objectives: list[str] = field(default_factory=list)  # metrics of metric_table (empty: the selection metric)
    select: str | None = None  # the rule that picks a study's point of the Pareto front (focustune.objectives)

    @property
    def storage_root(self) -> str:
        """Where Tune keeps experiments: a local folder or a URI (s3://, gs://, ...) all nodes reach."""
        if self.storage and "://" in self.storage:
            return self.storage.rstrip("/")
        return str(Path(self.storage or Path.cwd() / "focustune_runs").expanduser().resolve())

    @property
    def storage_path(self) -> str:
        return f"{self.storage_root}/{self.experiment}"

    @property
    def tracking(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    @property
    def optuna_url(self) -> str:
        """Optuna's RDB storage: ``--optuna-storage``, else ``optuna.db`` beside the sweep state (or in
        the working folder when the sweep state lives in an object store)."""
        if self.optuna_storage:
            return self.optuna_storage
        folder = Path.cwd() if "://" in self.storage_root else Path(self.storage_path)
        return f"sqlite:///{folder / 'optuna.db'}"

    @property
    def objective_names(self) -> tuple[str, ...]:
        """What each study optimises (``--objectives``; by default the one selection metric)."""
        return parse_objectives(self.objectives)

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_names) > 1

    @property
    def selection_rule(self) -> SelectionRule | None:
        """How a study picks its point of the front: None on the one-objective path without ``--select``
        (today's best trial by validation), else the parsed rule (the first objective by default)."""
        if not self.multi_objective and not self.select:
            return None
        return SelectionRule.parse(self.select, self.objective_names)

    @property
    def fixed_values(self) -> dict[str, Any]:
        """The hyperparameters every trial of the sweep shares: ``fixed`` and the epoch budget."""
        return {**self.fixed, "epochs": self.epochs}

    def apply_objectives(self) -> None:
        """Refuse unknown objectives, a malformed ``--select`` rule and a fixed ``selection_metric`` other
        than the first objective (ConfigError); with ``--objectives``, make the first objective every
        trial's ``selection_metric``: it picks the trial's best epoch, whose validation values are the
        trial's point (and its one objective on the one-objective path)."""
        objectives = self.objective_names
        self.selection_rule  # noqa: B018 (parsing it is the check)
        fixed = self.fixed.get("selection_metric")
        if self.objectives and fixed is not None and fixed != objectives[0]:
            raise ConfigError(f"--set selection_metric={fixed} contradicts --objectives {','.join(objectives)}: the "
                              "first objective picks each trial's best epoch; drop the --set or reorder")
        if self.objectives:
            self.fixed["selection_metric"] = objectives[0]
