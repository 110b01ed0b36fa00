"""The file MLflow runs to build a focustune model when loading it (MLflow's "models from code": no
pickled object is stored). ``model_package.log_bundle`` logs it with every model."""

from mlflow.models import set_model

from focustune.sweeps.model_package import FocusTuneModel

set_model(FocusTuneModel())
