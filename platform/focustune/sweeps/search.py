"""The sweep's searcher: one seeded Optuna TPE study per (dataset, method), multiplexed into one Tune run.

With several objectives (``--objectives``) each study is an Optuna multi-objective study (one
direction per objective, from its row's ``sign`` in ``metric_table``), told each full-budget trial's
best-epoch validation values; the sampler stays TPE (:func:`study_sampler` says why).

Tune asks :class:`MultiStudySearch` for a configuration whenever a slot is free; the
:class:`~focustune.sweeps.studies.StudyQueue` picks the study, that study's own Optuna study proposes
(it sees only its own trials), and a finished search is followed by its seed re-runs. Studies live in
an Optuna RDB storage (SQLite next to the sweep state by default), named ``DATASET/METHOD``.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ray import tune
from ray.tune.search import Searcher

from focustune import credentials
from focustune.errors import ResumeRefused
from focustune.files import write_atomic
from focustune.objectives import SelectionRule, directions
from focustune.sweeps.studies import RERUN, Outcome, Study, StudyQueue, objective_values, selection_score
from focustune.records import DIVERGED, FULL_BUDGET, KIND_KEY, OBJECTIVE, SEED_KEY, STUDY_KEY

if TYPE_CHECKING:  # the spaces module needs torch (through the declared hyperparameters); the searcher does not
    from focustune.spaces import Dimension, SearchSpace


def _suggest(trial: Any, dim: Dimension) -> Any:
    if dim.type == "choice":
        return trial.suggest_categorical(dim.name, list(dim.values or ()))
    if dim.type == "int":
        return trial.suggest_int(dim.name, int(dim.low or 0), int(dim.high or 0), log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.type == "loguniform" or dim.log)


def _ordered(space: SearchSpace) -> list[Dimension]:
    """Dimensions with every `when` condition's key suggested before the key it guards."""
    done: list[Dimension] = []
    pending = list(space.dimensions.values())
    while pending:
        ready = [d for d in pending if all(k in {x.name for x in done} or k not in space.dimensions
                                           for k in d.when)]
        if not ready:
            names = ", ".join(d.name for d in pending)
            raise ValueError(f"search space {space.source}: circular 'when' conditions among {names}")
        done += ready
        pending = [d for d in pending if d not in ready]
    return done


def study_sampler(seed: int) -> Any:
    """The sampler of every study, one objective or several: Optuna's seeded ``TPESampler``.

    Why TPE for several objectives too: in Optuna 4 it is MOTPE when the study has several directions
    (Ozaki et al., 2020/2022: built for expensive multi-objective searches, such as a training run per
    trial), fast since 4.0, and it proposes from the very first trials after its random start-up,
    which suits our budgets of 12-40 trials per study. ``NSGAIISampler`` evolves a population of 50 by
    default: with 40 trials it never completes one generation, and it is a random search until then.
    It also keeps the one-objective path unchanged (the same sampler, seed and settings), and it reads
    PRUNED and FAILED trials as the one-objective TPE does. (Ray Tune's ``OptunaSearch`` takes lists
    of metrics and modes for this, then also creates a TPE study with ``directions``; the sweep keeps
    its own searcher, which multiplexes one study per (dataset, method).)"""
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


class DefineByRun:
    """An Optuna define-by-run function (picklable, so Tune can checkpoint the searcher).

    Conditional keys are only suggested when their condition holds; ``fixed`` values (e.g. the
    sweep's epoch budget and seed) are returned as constants with every suggestion.
    """

    def __init__(self, space: SearchSpace, fixed: dict[str, Any] | None = None):
        self.fixed = dict(fixed or {})
        self.order = [d for d in _ordered(space) if d.name not in self.fixed]

    def __call__(self, trial: Any) -> dict:
        chosen: dict[str, Any] = {}
        for dim in self.order:
            if dim.applies({**self.fixed, **chosen}):
                chosen[dim.name] = _suggest(trial, dim)
        return {**chosen, **self.fixed}


@dataclass(frozen=True)
class LiveTrial:
    """A started trial: its study, kind, configuration (with seed) and Optuna trial number (search only)."""

    study: str
    kind: str
    config: dict[str, Any]
    number: int | None = None


class MultiStudySearch(Searcher):
    """Ray Tune searcher over many studies; trial configs carry ``study``, ``kind`` and ``seed``.

    Optuna is told the truth: a trial stopped early by the scheduler is PRUNED (a partial budget's
    score), a diverged or errored one FAIL; only full-budget trials are COMPLETE with their score.

    ``max_concurrent`` trials at most are live at once (the searcher limits itself rather than through
    Tune's ConcurrencyLimiter, whose state Tune snapshots in another file: a driver killed while Tune
    uploads its snapshot left the limiter waiting for a trial that had ended, and the sweep hung).
    After a restore, :class:`TrialLedger` hands the searcher Tune's restored trials once
    (:meth:`reconcile`), since Tune uploads its trial list and the searcher's state as separate files.
    """

    _current: ClassVar[Any] = None  # a weak reference to the searcher Tune uses in this process

    def __init__(self, spaces: dict[str, DefineByRun], queue: StudyQueue, storage: str, sampler_seed: int,
                 warm_starts: dict[str, list[dict]] | None = None, max_concurrent: int | None = None,
                 objectives: tuple[str, ...] = ()):
        super().__init__(metric=OBJECTIVE, mode="max")
        self.objectives = tuple(objectives)  # several: multi-objective studies; else the one-objective path
        self.spaces, self.queue, self.storage, self.sampler_seed = spaces, queue, storage, sampler_seed
        self.warm_starts = warm_starts or {}
        self.max_concurrent = max_concurrent
        self.live: dict[str, LiveTrial] = {}  # by Tune trial id
        self.ended: dict[str, LiveTrial] = {}  # by Tune trial id: what ended (for reconcile)
        self._studies: dict[str, Any] = {}
        self._restored = False

    @classmethod
    def current(cls) -> MultiStudySearch | None:
        return None if cls._current is None else cls._current()

    @property
    def several(self) -> bool:
        """Several objectives (a searcher pickled before they existed has one)."""
        return len(getattr(self, "objectives", ())) > 1

    def _register(self) -> None:
        type(self)._current = weakref.ref(self)

    # ---------------------------------------------------------------- Optuna studies
    def optuna_study(self, key: str) -> Any:
        """The study ``key`` from the storage: loaded when it exists, else created (and warm-started)."""
        if key not in self._studies:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own progress
            sampler = study_sampler(self.sampler_seed)
            try:
                study = optuna.load_study(study_name=key, storage=self.storage, sampler=sampler)
                self._fail_lost_trials(study)
            except KeyError:
                goals = {"directions": directions(self.objectives)} if self.several else {"direction": "maximize"}
                study = optuna.create_study(study_name=key, storage=self.storage, sampler=sampler, **goals)
                for params in self.warm_starts.get(key, []):
                    study.enqueue_trial(params, skip_if_exists=True)
            self._studies[key] = study
        return self._studies[key]

    def _fail_lost_trials(self, study: Any) -> None:
        """Trials asked by a driver that died before its state was saved: no Tune trial will end them."""
        from optuna.trial import TrialState

        known = {t.number for t in self.live.values() if t.study == study.study_name}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in known:
                study.tell(trial.number, state=TrialState.FAIL)

    # ---------------------------------------------------------------- Tune's searcher interface
    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]  # Tune reads FINISHED too
        self._register()
        limit = getattr(self, "max_concurrent", None)  # a searcher pickled before the limit was its own: none
        if limit and len(self.live) >= limit:
            return None
        assignment = self.queue.next()
        if assignment is None:
            return Searcher.FINISHED if self.queue.finished else None
        if assignment.kind == RERUN:
            best = self.queue.studies[assignment.study].best
            assert best is not None  # the queue hands out re-runs only for a study with a best trial
            config, number = {**best.config, SEED_KEY: assignment.seed}, None
        else:
            trial = self.optuna_study(assignment.study).ask()
            config, number = self.spaces[assignment.study](trial), trial.number
        self.live[trial_id] = LiveTrial(assignment.study, assignment.kind, config, number)
        return {**config, STUDY_KEY: assignment.study, KIND_KEY: assignment.kind}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        result = result or {}
        failed = error or bool(result.get(DIVERGED))
        full = not failed and bool(result.get(FULL_BUDGET))
        self.ended[trial_id] = live
        if live.kind == RERUN:
            self.queue.rerun_ended(live.study, live.config[SEED_KEY], {**_final(result), "ok": full})
            del self.live[trial_id]
            return
        if live.number is not None:
            self._tell(live.study, live.number, result, full, failed)  # while still live: not a lost trial
        del self.live[trial_id]
        score = selection_score(result, live.config) if full else None
        values = objective_values(result, getattr(self, "objectives", ())) if full else {}
        self.queue.search_ended(live.study, Outcome(live.config, score, _final(result, "test_"), trial_id, values))

    # ---------------------------------------------------------------- after a restore
    def reconcile(self, trials: list) -> None:
        """Agree with the trials a restored Tune runs (its snapshot of them and the searcher's are
        separate files, uploaded one by one, so a killed driver can leave one newer than the other):
        a trial the searcher started or ended that Tune does not know is taken back (its work is done
        again; its Optuna trial, if still running, is failed when the study loads); a trial Tune knows
        that the searcher does not is adopted (with its Optuna trial, found by its parameters); a trial
        Tune restored as ended that the searcher still has live is ended (Tune never reports it again)."""
        self._restored = False
        known = {t.trial_id: t for t in trials}
        for trial_id, live in [*self.live.items(), *self.ended.items()]:
            if trial_id not in known and live.study in self.queue.studies:
                self.live.pop(trial_id, None)
                self.ended.pop(trial_id, None)
                self.queue.unstart(live.study, live.kind, live.config.get(SEED_KEY), trial_id)
        for trial_id, trial in known.items():
            config = dict(trial.config or {})
            key, kind = config.pop(STUDY_KEY, None), config.pop(KIND_KEY, None)
            if trial_id in self.ended or key not in self.queue.studies:
                continue
            if trial_id not in self.live:
                number = None if kind == RERUN else self._asked_number(key, config)
                self.queue.adopt(key, kind, config.get(SEED_KEY))
                self.live[trial_id] = LiveTrial(key, kind, config, number)
        for trial_id, trial in known.items():  # once all are live: loading a study fails the others
            if trial_id in self.live and trial.status in ("TERMINATED", "ERROR"):  # Tune won't report it again
                self.on_trial_complete(trial_id, trial.last_result, error=trial.status == "ERROR")

    def _asked_number(self, key: str, config: dict[str, Any]) -> int | None:
        """The running Optuna trial of study ``key`` that proposed ``config``, else None."""
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=key, storage=self.storage)
        except KeyError:
            return None
        same = lambda a, b: a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b))  # noqa: E731
        taken = {t.number for t in self.live.values() if t.study == key}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in taken and all(same(v, config.get(k)) for k, v in trial.params.items()):
                return trial.number
        return None

    def _tell(self, key: str, number: int, result: dict, full: bool, failed: bool) -> None:
        from optuna.trial import TrialState

        study = self.optuna_study(key)
        # skip_if_finished: a trial told just before the driver died (after the searcher's last
        # snapshot) is re-run by the restored Tune and ends a second time; Optuna keeps the first
        values = [float(result.get(f"best_val_{m}", math.nan)) for m in self.objectives] if self.several else []
        if full and self.several and all(map(math.isfinite, values)):
            study.tell(number, values, skip_if_finished=True)
        elif full and self.several:  # a NaN value (an AUC of one class): Optuna would fail it anyway
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        elif full:
            study.tell(number, float(result[OBJECTIVE]), skip_if_finished=True)
        else:
            study.tell(number, state=TrialState.FAIL if failed else TrialState.PRUNED, skip_if_finished=True)

    # ---------------------------------------------------------------- state (Tune checkpoints it)
    def get_state(self) -> dict:
        return {"queue": self.queue, "live": dict(self.live), "ended": dict(self.ended)}

    def set_state(self, state: dict) -> None:
        self.queue, self.live, self.ended = state["queue"], dict(state["live"]), dict(state.get("ended", {}))
        self._studies = {}  # reloaded from the storage, lost trials failed then
        self._restored = True  # TrialLedger reconciles it with Tune's restored trials
        self._register()

    def save(self, checkpoint_path: str) -> None:
        """The state as data (JSON), never a pickle: ``--resume`` reads it back from shared storage.
        Tune names the file ``searcher-state-*.pkl``."""
        write_atomic(checkpoint_path, json.dumps(state_to_data(self.get_state())).encode())

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(state_from_data(Path(checkpoint_path).read_bytes(), checkpoint_path))

    def __getstate__(self) -> dict:  # storage connections do not pickle; nor does the storage's password
        return {**self.__dict__, "_studies": {}, "storage": credentials.stored(self.storage)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, storage=credentials.revealed(state["storage"]))


STATE_FORMAT, STATE_VERSION = "focustune.searcher-state", 1


def state_to_data(state: dict) -> dict[str, Any]:
    """The searcher's state (:meth:`MultiStudySearch.get_state`) as plain JSON data, with its version."""
    queue: StudyQueue = state["queue"]
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "one_at_a_time": queue.one_at_a_time,
            "studies": [asdict(study) for study in queue.studies.values()],
            "live": {tid: asdict(t) for tid, t in state["live"].items()},
            "ended": {tid: asdict(t) for tid, t in state["ended"].items()}}


def state_from_data(raw: bytes, where: str) -> dict:
    """The searcher's state back from :func:`state_to_data`'s JSON; anything else is refused."""
    try:
        data = json.loads(raw)
        if data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
            raise ValueError(f"not {STATE_FORMAT} version {STATE_VERSION}")
        studies = []
        for study in data["studies"]:
            ended = [Outcome(**{**o, "score": None if o.get("score") is None else tuple(o["score"])})
                     for o in study["ended"]]
            reruns = {int(seed): metrics for seed, metrics in study["reruns"].items()}
            studies.append(Study(**{**study, "ended": ended, "reruns": reruns}))
        return {"queue": StudyQueue(studies, bool(data["one_at_a_time"])),
                "live": {tid: LiveTrial(**t) for tid, t in data["live"].items()},
                "ended": {tid: LiveTrial(**t) for tid, t in data["ended"].items()}}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON errors are ValueErrors
        raise ResumeRefused(f"{where} is not a searcher state this version of focustune wrote ({exc}); "
                            "nothing was loaded from it") from exc


class TrialLedger(tune.Callback):
    """Hands the searcher of a restored sweep Tune's restored trials, before it suggests anything
    (:meth:`MultiStudySearch.reconcile`), and counts the trials still live as each step of Tune's loop
    ends. Tune ends its loop early on Ctrl-C or SIGUSR1 and returns normally, and its clean-up marks
    every live trial TERMINATED, as an early-stopped one: live trials after the last step are how
    the driver tells an interrupted Tune run from a finished one."""

    #: Trials live when the last step of this process's Tune loop ended (:meth:`begin` resets it).
    live_at_last_step = 0

    @classmethod
    def begin(cls) -> None:
        """Before a Tune run (a restored run whose trials are all done takes no step)."""
        cls.live_at_last_step = 0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        searcher = MultiStudySearch.current()
        if searcher is not None and searcher._restored:
            searcher.reconcile(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        TrialLedger.live_at_last_step = sum(not trial.is_finished() for trial in trials)


def _final(result: dict, prefixes: tuple[str, ...] | str = ("test_", "best_val_")) -> dict[str, float]:
    """A trial's final scalar metrics (its best epoch's validation and test scores)."""
    return {k: v for k, v in result.items() if k.startswith(prefixes) and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def study_queue(keys: list[str], trials: int, seeds: int, one_at_a_time: bool = False,
                objectives: tuple[str, ...] = (), rule: SelectionRule | None = None) -> StudyQueue:
    """A fresh queue: every study gets ``trials`` search trials and re-runs with seeds 1..``seeds`` (of
    the point ``rule`` selects from its front of ``objectives``, when given)."""
    return StudyQueue([Study(key, trials, list(range(1, seeds + 1)), objectives=tuple(objectives), rule=rule)
                       for key in keys], one_at_a_time)
