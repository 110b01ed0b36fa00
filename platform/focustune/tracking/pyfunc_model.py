"""The file MLflow runs to build a focustune model when loading it (MLflow's "models from code": no
pickled object is stored). ``model_package.log_bundle`` logs it with every model, with focustune's
package in the model's ``code/`` folder, which MLflow puts on ``sys.path`` before it runs this file: the
import below uses focustune as imported already by the process (``focustune predict``), else the model's
own copy, which comes first on ``sys.path`` (an installed focustune is not needed)."""

from mlflow.models import set_model

from focustune.tracking.model_package import FocusTuneModel

set_model(FocusTuneModel())
