"""``focustune predict``: classify new images with a trained model (a folder or an MLflow model)."""

from __future__ import annotations

import argparse
import pickle
import warnings
from pathlib import Path
from typing import Any

from focustune.cli import options
from focustune.cli.console import stderr
from focustune.errors import ConfigError
from focustune.tracking_schema import default_tracking_uri

MODEL_URI_FORMS = "models:/NAME@champion, models:/NAME/VERSION, runs:/RUN_ID/model"


def add_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", required=True, help=f"{MODEL_URI_FORMS}, or a downloaded model folder")
    cmd.add_argument("--input", required=True, help="a folder of images (searched recursively), an .npz "
                                                    "(array `images`, else `test_images`) or one image")
    cmd.add_argument("--output", required=True, help="CSV file: input, class, prob_<class> per class")
    options.add_tracking_uri(cmd)
    cmd.add_argument("--batch-size", type=int, default=1024, help="images per forward pass (default 1024)")
    options.add_device(cmd)
    options.add_overwrite(cmd, "an existing --output file")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from focustune.inference import InputBatches, write_predictions

    output = Path(args.output)
    if not Path(args.input).exists():
        raise ConfigError(f"--input {args.input}: no such file or folder")
    options.check_output_file(output, "--output", args.overwrite, protected=(Path(args.input),))
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    options.check_device(args.device)
    store = args.tracking_uri or default_tracking_uri()  # tracking and registry of an MLflow model URI
    with tempfile.TemporaryDirectory(prefix="focustune-predict-") as download:
        predictor = _load_model(_model_folder(args.model, store, download), args.model, args.device)
        batches = InputBatches(Path(args.input), predictor.card.channels, predictor.card.image_size, args.batch_size)
        counts = write_predictions(predictor, batches, output, args.batch_size)
    if batches.skipped:
        shown = ", ".join(batches.skipped[:10]) + (" ..." if len(batches.skipped) > 10 else "")
        stderr(f"skipped {len(batches.skipped)} unreadable file(s): {shown}")
    origin = "" if Path(args.model).expanduser().exists() else f" from MLflow {store}"
    print(f"model {args.model}{origin}: {predictor.card.describe()}; device {predictor.device}")
    source = f" (array {batches.array} of {args.input})" if batches.array else ""
    print(f"predicted {sum(counts.values())} image(s){source}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {output}")
    return 0


#: What loading a model folder that is not a focustune model raises: weights that are not a state
#: dict of tensors (UnpicklingError: ``weights_only`` refused them; RuntimeError: not torch's format,
#: or keys and shapes that do not fit the card's model; EOFError), a card that is not ours (ValueError:
#: broken JSON; TypeError, KeyError: other fields).
MODEL_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError)


def _load_model(folder: Path, model: str, device: str | None) -> Any:
    from focustune.inference import load_bundle

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch, about a foreign pickle
            return load_bundle(folder, device=device)
    except MODEL_READ_ERRORS as exc:
        raise ConfigError(f"--model {model}: not a focustune model that can be loaded "
                          f"({options.untrusted_file_problem(exc)})") from None


def _model_folder(model: str, store: str, download: str) -> Path:
    """The bundle of ``--model``: a local folder (a bundle or an MLflow model), or an MLflow model URI
    read from ``store`` (tracking and registry)."""
    from focustune.inference import bundle_folder

    if Path(model).expanduser().exists():
        return bundle_folder(Path(model).expanduser())
    if ":" not in model:
        raise ConfigError(f"--model {model}: no such file or folder, and not an MLflow model URI ({MODEL_URI_FORMS})")
    from focustune.tracking.model_package import download_model
    from focustune.tracking.store_checks import check_tracking_uri

    check_tracking_uri(store)
    return bundle_folder(download_model(model, store, download))
