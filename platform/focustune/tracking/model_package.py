"""A focustune model in MLflow: a pyfunc model wrapping a bundle (:mod:`focustune.inference`), its
logging on a run, registration with the ``champion`` alias rule, and fetching it back.

Loading needs what :func:`requirements` lists (MLflow, torch, torchvision, numpy, pandas, Pillow,
PyYAML; no Ray, no Optuna) and not an installed focustune: the model carries focustune's code
(:func:`code_paths`). ``mlflow.pyfunc.load_model(uri).predict(images)`` takes uint8 ``[N, H, W]``
(grey models) or ``[N, H, W, 3]`` (RGB models) of any size and returns a table: ``class`` (the
predicted class name at the model's operating point: its per-class offsets, a threshold for a binary
task) and ``prob_<class>`` per class (calibrated by the model's temperature).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc.model import PythonModel
import numpy as np

from focustune.environment import restored_environment
from focustune.errors import ConfigError
from focustune.inference import ModelCard, Predictor, load_bundle, make_bundle
from focustune.run_config import RunConfig
from focustune.tracking.batches import log_batched
from focustune.tracking_schema import (CALIBRATION_ARTIFACT, CHAMPION_ALIAS, CONFIG_ARTIFACT, KIND_TRAIN,
                                       MODEL_ARTIFACT, RELIABILITY_ARTIFACT, TAG, VAL_TAG_PREFIX, calibration_metrics,
                                       tracked_metrics)

BUNDLE_ARTIFACT = "bundle"  # the pyfunc artifact holding the bundle: <model>/artifacts/bundle/


def _quiet_artifact_transfers() -> None:
    """No MLflow progress bars on the terminal while models are uploaded or downloaded."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def predictions_frame(card: ModelCard, classes: np.ndarray, probs: np.ndarray) -> Any:
    """The pyfunc output: ``class`` names, then ``prob_<class>`` columns (float64)."""
    import pandas as pd

    frame = pd.DataFrame({"class": [card.class_names[i] for i in classes]})
    for index, name in enumerate(card.class_names):
        frame[f"prob_{name}"] = probs[:, index].astype(np.float64)
    return frame


class FocusTuneModel(PythonModel):
    """The pyfunc wrapper: loads the bundle, converts images as training did, predicts in batches."""

    predictor: Predictor

    def load_context(self, context: Any) -> None:
        self.predictor = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> Any:
        """uint8 images [N, H, W] or [N, H, W, 3] -> a DataFrame of classes and probabilities."""
        classes, probs = self.predictor.predict_array(np.asarray(model_input))
        return predictions_frame(self.predictor.card, classes, probs)


def signature(card: ModelCard) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    shape = (-1, -1, -1) if card.channels == 1 else (-1, -1, -1, 3)
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string", "class"),
                                           *(ColSpec("double", f"prob_{name}") for name in card.class_names)]
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), shape)]), outputs=Schema(outputs))


def input_example(card: ModelCard) -> np.ndarray:
    """Two mid-grey images of the model's size (synthetic: no training image leaves the dataset)."""
    shape = (2, card.image_size, card.image_size) + (() if card.channels == 1 else (3,))
    return np.full(shape, 128, dtype=np.uint8)


def code_paths() -> list[str]:
    """The code a logged model carries: the folder of the ``focustune`` package now imported, which MLflow
    copies to the model's ``code/focustune/`` (``__pycache__`` left out, links followed) and puts first on
    ``sys.path`` before it runs ``pyfunc_model.py``. A model thus loads, and ``mlflow models serve``
    serves it, where focustune is not installed: ``pip install -r requirements.txt`` needs only public
    packages (:func:`requirements`).

    Why MLflow's ``code_paths`` and not a focustune wheel inside the model (with a requirements line
    naming its file):

    - the package folder is there however focustune is installed: a source checkout (editable install
      or ``PYTHONPATH``) and a user's wheel install alike. A wheel would have to be built at logging
      time, which needs the source tree and a build backend (not there in a wheel install), or be
      re-assembled from the installed files;
    - nothing is built or downloaded when a model is logged (no network, no build tools);
    - a wheel's metadata requires all of focustune (Ray, Optuna, scikit-learn, medmnist, ...), so
      installing it would pull the whole tuning stack in (or need ``--no-deps`` and then a second list
      anyway); with ``code_paths`` the model's requirements are exactly what loading and predicting
      import;
    - it is MLflow's own convention for a model's local code (``code/`` in the model, recorded in the
      MLmodel file, added to ``sys.path`` by ``mlflow.pyfunc.load_model``), and the model stays as code,
      not a pickle.

    Where focustune is already imported (``focustune predict``, a test), the loaded model uses that
    import; MLflow adding ``code/`` to ``sys.path`` changes nothing for it."""
    import focustune

    return [str(Path(focustune.__file__).resolve().parent)]


def requirements() -> list[str]:
    """The model's ``requirements.txt``: what loading and predicting import, not focustune itself (the model
    carries its code, :func:`code_paths`). torch, torchvision and MLflow are pinned to the versions the
    model was made with; torchvision builds the ResNet/EfficientNet backbones, Pillow resizes inputs of
    another size, PyYAML reads the run configuration (``focustune.run_config``), pandas makes the output
    table."""
    import torch
    import torchvision

    plain = lambda version: version.split("+")[0]  # noqa: E731
    return [f"torch=={plain(torch.__version__)}", f"torchvision=={plain(torchvision.__version__)}",
            f"mlflow=={mlflow.__version__}", "numpy", "pandas", "pillow", "pyyaml"]


def card_metadata(card: ModelCard) -> dict[str, Any]:
    """What the MLmodel file says about the model (the bundle's model.json has everything)."""
    return {"method": card.config["method"], "dataset": card.config["dataset"], "task": card.task,
            "class_names": card.class_names, "channels": card.channels, "image_size": card.image_size,
            "normalisation": card.normalisation, "temperature": card.temperature, "offsets": card.offsets,
            "operating_point": card.operating_point, "operating_val": card.operating_val, "threshold": card.threshold,
            "threshold_metric": card.threshold_metric, "selection_metric": card.selection_metric, "val": card.val}


def log_bundle(folder: str | os.PathLike, card: ModelCard) -> Any:
    """Log the bundle in ``folder`` as the MLflow model ``model`` of the active run; returns its ModelInfo."""
    _quiet_artifact_transfers()
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT, python_model=str(Path(__file__).with_name("pyfunc_model.py")),
        artifacts={BUNDLE_ARTIFACT: str(folder)},
        signature=signature(card), input_example=input_example(card), pip_requirements=requirements(),
        code_paths=code_paths(),
        metadata=card_metadata(card), tags={TAG + "method": card.config["method"]})


# ---------------------------------------------------------------- the registry

def check_model_name(name: str) -> None:
    """Refuse a registered-model name MLflow would refuse (empty, or holding '/' or ':')."""
    if not name.strip() or any(c in name for c in "/:"):
        raise ConfigError(f"--register {name!r}: a model name must be non-empty, without '/' or ':'")


def _score(value: Any) -> float:
    """A metric value for comparing versions; a missing or NaN one ranks lowest."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(number) else number


def registered_version(client: Any, name: str, info: Any) -> str | None:
    """The version of ``name`` already registered from ``info``'s logged model (by a process that died
    before it recorded so), else None."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{info.run_id}'")
    found = sorted(int(v.version) for v in versions if v.model_id == info.model_id or v.source == info.model_uri)
    return str(found[0]) if found else None


def register(tracking_uri: str, name: str, info: Any, card: ModelCard) -> dict[str, Any]:
    """Register ``info``'s model as a version of ``name`` (the version already registered from that model,
    when there is one: registering again after a crash adds none); move ``champion`` to it only when it
    beats the current champion on the model's selection metric (validation). Returns what happened,
    with a ``message`` saying so."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    metric = card.selection_metric
    tags = {**{f"{TAG}{VAL_TAG_PREFIX}{k}": v for k, v in card.val.items()},
            TAG + "selection_metric": metric, TAG + "method": card.config["method"],
            TAG + "dataset": card.config["dataset"]}
    version = registered_version(client, name, info)
    if version is None:
        version = str(client.create_model_version(name, source=info.model_uri, run_id=info.run_id, tags=tags,
                                                  model_id=info.model_id).version)
    new = _score(card.val.get(metric))
    champion = client.get_registered_model(name).aliases.get(CHAMPION_ALIAS)
    champion = None if champion is None else str(champion)
    head = f"registered {name} version {version} (validation {metric} {new:.4f})"
    if champion is not None and champion != version:
        old = _score(client.get_model_version(name, champion).tags.get(f"{TAG}{VAL_TAG_PREFIX}{metric}"))
        if new <= old:
            return {"name": name, "version": version, "champion": champion, "moved": False,
                    "message": f"{head}; the {CHAMPION_ALIAS}, version {champion} ({metric} {old:.4f}), stays"}
    if champion != version:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    was = ("no champion before" if champion is None else "already" if champion == version
           else f"it beats version {champion}")
    return {"name": name, "version": version, "champion": version, "moved": True,
            "message": f"{head}; {CHAMPION_ALIAS} -> version {version} ({was})"}


# ---------------------------------------------------------------- logging a run's model

#: The environment variables MLflow's process-wide setters write (subprocesses inherit them).
STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def use_store(tracking_uri: str) -> Iterator[None]:
    """Inside the block, MLflow's process-wide tracking AND registry point at ``tracking_uri``: parts of
    MLflow (the resolution of ``models:/NAME@ALIAS``, ``log_model``'s registry calls) read the global
    registry URI and ignore one passed to them, and would otherwise open ``./mlflow.db``. Afterwards
    the previous setting and its environment variables are restored, so that nothing started later
    by this process (a subprocess inherits them) is pointed at this store."""
    previous = {name: os.environ.get(name) for name in STORE_VARIABLES}
    with restored_environment(*STORE_VARIABLES):
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        try:
            yield
        finally:
            # None (nothing set before) is what MLflow itself starts from: its default store
            mlflow.set_tracking_uri(previous["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]
            mlflow.set_registry_uri(previous["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoggedRunModel:
    """A model already logged on a run: what :func:`register` needs of a ModelInfo."""

    model_uri: str
    run_id: str
    model_id: str


def logged_run_model(client: Any, run_id: str) -> LoggedRunModel | None:
    """The model ``model`` that run ``run_id`` logged completely (MLflow 3 records each logged model's
    source run), else None. A model a killed process left half-uploaded (not READY) is deleted, so
    the run keeps exactly one."""
    from mlflow.entities import LoggedModelStatus

    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}' AND "
                                                                    f"name = '{MODEL_ARTIFACT}'")
    ready = sorted((m for m in found if m.status == LoggedModelStatus.READY), key=lambda m: m.creation_timestamp)
    for model in found:
        if model.status != LoggedModelStatus.READY:
            client.delete_logged_model(model.model_id)
    if not ready:
        return None
    return LoggedRunModel(f"models:/{ready[0].model_id}", run_id, ready[0].model_id)


def log_run_model(tracking_uri: str, run_id: str, state: dict[str, Any], config: dict[str, Any], dataset: Any,
                  val: dict[str, float], register_as: str | None = None) -> dict[str, Any]:
    """Bundle ``state`` (weights) and log it as the model of run ``run_id`` (resumed for it); register it
    when ``register_as`` is given. Returns ``uri``, ``card`` and ``registered`` (or None).

    Idempotent per run: a model the run logged already (a process died before it recorded the
    hand-over, and ``--resume`` delivers again) is reused, and so is its registered version."""
    with made_bundle(state, config, dataset, val) as (folder, card):
        return log_made_bundle(tracking_uri, run_id, folder, card, register_as)


@contextmanager
def made_bundle(state: dict[str, Any], config: dict[str, Any], dataset: Any,
                val: dict[str, float]) -> Iterator[tuple[Path, ModelCard]]:
    """(folder, card) of the bundle of ``state`` (:func:`~focustune.inference.make_bundle`: temperature and
    operating point fitted on validation), in a temporary folder while the block runs."""
    with tempfile.TemporaryDirectory(prefix="focustune-model-") as temporary:
        folder = Path(temporary) / BUNDLE_ARTIFACT  # the folder's name is the artifact's path in the model
        yield folder, make_bundle(folder, state, config, dataset, val)


def log_made_bundle(tracking_uri: str, run_id: str, folder: Path, card: ModelCard,
                    register_as: str | None = None) -> dict[str, Any]:
    """Log the bundle in ``folder`` as run ``run_id``'s model (reusing one the run logged already), and
    register it when ``register_as`` is given; see :func:`log_run_model`."""
    from mlflow import MlflowClient

    with use_store(tracking_uri):
        info: Any = logged_run_model(MlflowClient(tracking_uri=tracking_uri), run_id)
        active = mlflow.active_run()
        if info is not None:
            pass
        elif active is not None and active.info.run_id == run_id:
            info = log_bundle(folder, card)
        else:
            with mlflow.start_run(run_id=run_id):
                info = log_bundle(folder, card)
        registered = register(tracking_uri, register_as, info, card) if register_as else None
    return {"uri": info.model_uri, "card": card, "registered": registered}


def _run_metrics(result: Any, class_names: list[str]) -> list[tuple[str, float, int]]:
    """Per-epoch training loss and validation metrics (step = epoch), then the final best_val_*/test_* and the
    temperature scaling's (step 0), as ``(name, value, step)`` rows; non-finite values are left out."""
    rows = [(name, value, h["epoch"]) for h in result.history
            for name, value in tracked_metrics("val", h["val"], class_names).items()]
    rows += [("train_loss", h["train_loss"], h["epoch"]) for h in result.history]
    final = {**tracked_metrics("best_val", result.val, class_names),
             **tracked_metrics("test", result.test, class_names), **calibration_metrics(result.calibration),
             "best_epoch": result.best_epoch}
    rows += [(name, value, 0) for name, value in final.items()]
    return [(name, float(value), step) for name, value, step in rows if math.isfinite(float(value))]


def log_calibration(calibration: dict[str, Any], title: str) -> None:
    """``calibration.json`` and its reliability diagram as artifacts of the active run."""
    import io

    from PIL import Image

    from focustune.calibration import reliability_png

    mlflow.log_dict(calibration, CALIBRATION_ARTIFACT)
    mlflow.log_image(Image.open(io.BytesIO(reliability_png(calibration, title))), artifact_file=RELIABILITY_ARTIFACT)


def log_train_run(tracking_uri: str, experiment: str, trainer: Any, config: RunConfig, register_as: str | None,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """A finished ``train`` run in MLflow: params, per-epoch and final metrics, its configuration file
    (artifact ``run_config.yaml``), its temperature scaling (``calibration.json``, reliability diagram) and
    its model; registered when ``register_as`` is given. The model's bundle is made first: an operating
    point it cannot meet is refused before anything is logged."""
    from mlflow import MlflowClient

    result = trainer.result()
    tags = {TAG + "kind": KIND_TRAIN, TAG + "method": result.method, TAG + "dataset": result.dataset,
            **{TAG + k: v for k, v in trainer.method.tags().items()}}
    names = [str(c) for c in trainer.dataset.class_names]
    with made_bundle(trainer.best_state, asdict(config), trainer.dataset, result.val) as (folder, card), \
            use_store(tracking_uri), mlflow.start_run(
            experiment_id=mlflow.set_experiment(experiment).experiment_id,
            run_name=f"{result.dataset}-{result.method}-seed{result.seed}", tags=tags) as run:
        params = {"method": result.method, "dataset": result.dataset, "seed": result.seed, **result.params}
        log_batched(MlflowClient(tracking_uri), run.info.run_id, params=params, history=_run_metrics(result, names))
        mlflow.log_text(config.to_yaml(), CONFIG_ARTIFACT)
        log_calibration(result.calibration, f"{result.method} on {result.dataset}, seed {result.seed}")
        logged = log_made_bundle(tracking_uri, run.info.run_id, folder, card, register_as)
    print_lines(say, logged, f"MLflow run {run.info.run_id} (experiment {experiment}, MLflow {tracking_uri})")
    return logged


def download_model(uri: str, tracking_uri: str, destination: str | os.PathLike) -> Path:
    """Download the MLflow model ``uri`` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., models:/ID)
    into ``destination``; a missing store or model is a ConfigError (nothing is created)."""
    from mlflow.exceptions import MlflowException

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        raise ConfigError(f"--model {uri}: no MLflow store at {tracking_uri} (give --tracking-uri)")
    _quiet_artifact_transfers()
    try:
        with use_store(tracking_uri):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination),
                                                            tracking_uri=tracking_uri, registry_uri=tracking_uri))
    except MlflowException as exc:
        raise ConfigError(f"--model {uri}: not found in {tracking_uri}: {exc.message}") from None


def print_lines(out: Callable[[str], None], result: dict[str, Any], where: str) -> None:
    """Tell the user where the model is and what the registry did."""
    out(f"{where}: model {result['uri']} ({result['card'].describe()})")
    if result["registered"]:
        out(f"{where}: {result['registered']['message']}")
