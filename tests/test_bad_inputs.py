"""Every bad input of the command line, one table: each case writes its files, runs the CLI in this
process and must get exit 2, exactly one line on stderr (``focustune: error: ...``), no traceback,
nothing written or changed under its folder, and no work started (Ray not initialised, no training)."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from focustune.cli import main
from servers import free_port, postgres_server, tiny_npz

SWEEP = ["--methods", "erm", "--trials", "1", "--epochs", "1", "--seeds", "0", "--experiment", "bad"]


class Services:
    """Servers some cases need, started on first use and stopped with the module."""

    def __init__(self, stack: ExitStack):
        self.stack, self._postgres, self._not_ray = stack, None, None

    def postgres_url(self) -> str:
        if self._postgres is None:
            self._postgres = self.stack.enter_context(postgres_server())["focustune"]
        return self._postgres

    def not_ray(self) -> int:
        """A port that answers as a web server would (HTTP/1), not as Ray's gRPC."""
        if self._not_ray is None:
            listener = socket.create_server(("127.0.0.1", 0))
            self.stack.callback(listener.close)

            def answer() -> None:
                while True:
                    try:
                        connection, _ = listener.accept()
                    except OSError:
                        return
                    with connection:
                        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

            threading.Thread(target=answer, daemon=True).start()
            self._not_ray = listener.getsockname()[1]
        return self._not_ray


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with ExitStack() as stack:
        yield Services(stack)


# ---------------------------------------------------------------- files the cases write

def good_npz(folder: Path) -> Path:
    return tiny_npz(folder / "data.npz")


def npz(folder: Path, name: str = "bad.npz", **arrays: np.ndarray) -> Path:
    path = folder / name
    np.savez(path, **arrays)
    return path


def layout(images: Callable[[int], np.ndarray], labels: Callable[[int], np.ndarray], **extra: np.ndarray) -> dict:
    return {**{f"{s}_images": images(n) for s, n in (("train", 12), ("val", 6), ("test", 6))},
            **{f"{s}_labels": labels(n) for s, n in (("train", 12), ("val", 6), ("test", 6))}, **extra}


def two_classes(n: int) -> np.ndarray:
    return (np.arange(n) % 2).astype(np.int64)


def grey(size: tuple[int, int]) -> Callable[[int], np.ndarray]:
    return lambda n: np.zeros((n, *size), np.uint8)


def truncated(folder: Path) -> Path:
    path = good_npz(folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def with_stray_label(n: int) -> np.ndarray:
    labels = two_classes(n)
    labels[-1] = 7
    return labels


def bomb_png(path: Path, side: int = 40_000) -> Path:
    """A PNG that declares side x side pixels (above PIL's MAX_IMAGE_PIXELS twice over) in a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grey
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def bomb_folder(folder: Path) -> Path:
    from PIL import Image

    root = folder / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (12, 12), 40 * i).save(root / cls / f"{i}.png")
    bomb_png(root / "a" / "0bomb.png")
    return root


class Exploit:
    """Unpickling this runs a shell command that leaves a file: a pickle that is not ours."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def foreign_checkpoint(folder: Path) -> Path:
    (folder / "ckpt").mkdir()
    (folder / "ckpt" / "checkpoint.pt").write_bytes(pickle.dumps(Exploit()))
    return folder / "ckpt"


def tensors_not_ours(folder: Path) -> Path:
    (folder / "ckpt").mkdir()
    torch.save({"weights": torch.zeros(3)}, folder / "ckpt" / "checkpoint.pt")
    return folder / "ckpt"


def model_bundle(folder: Path, weights: bytes | None = None) -> Path:
    """A small focustune model (random weights) for 12-px grey images; ``weights`` replaces its weights file."""
    from focustune.inference import WEIGHTS_FILE, ModelCard, build_classifier, save_bundle

    card = ModelCard(config={"method": "erm", "dataset": "tiny", "params": {"model": "small_cnn", "head": "linear"}},
                     class_names=["a", "b", "c"], channels=1, image_size=12, task="multi-class",
                     selection_metric="balanced_acc", val={})
    bundle = save_bundle(folder / "model", build_classifier(card).state_dict(), card)
    if weights is not None:
        (bundle / WEIGHTS_FILE).write_bytes(weights)
    return bundle


def predict(folder: Path, *extra: str, model: Path | None = None, input: Path | None = None,
            output: str = "out.csv") -> list[str]:
    return ["predict", "--model", str(model or model_bundle(folder)), "--input", str(input or good_npz(folder)),
            "--output", output, *extra]


def sweep(folder: Path, *extra: str) -> list[str]:
    return ["sweep", "--dataset", str(good_npz(folder)), *SWEEP, *extra]


def tune_over(existing: Path) -> list[str]:
    """``tune`` with its default ``--config-out``, in the folder where ``existing`` already is."""
    return ["tune", "--method", "erm", "--dataset", str(good_npz(existing.parent)), *SWEEP[2:]]


def train(*extra: str) -> list[str]:
    return ["train", "--epochs", "1", "--quiet", *extra]


def touched(path: Path) -> Path:
    path.write_text("the user's own file\n")
    return path


def wrong_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(password="not-the-password").render_as_string(hide_password=False)


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Case:
    """``argv(folder, services)`` writes what the case needs and returns the command line; ``message``
    must appear on the one stderr line, none of ``absent`` may."""

    id: str
    argv: Callable[[Path, Services], list[str]]
    message: str
    absent: tuple[str, ...] = ()
    marks: tuple = field(default=())


NO_GPU = (pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),)
CASES = [
    # the stores and services a sweep names, before Ray starts
    Case("tracking-uri-path", lambda d, s: sweep(d, "--tracking-uri", str(d / "mlruns")), "MLflow's file store"),
    Case("tracking-uri-file", lambda d, s: sweep(d, "--tracking-uri", f"file://{d}/mlruns"), "MLflow's file store"),
    Case("tracking-db-not-answering",
         lambda d, s: sweep(d, "--tracking-uri", f"postgresql+psycopg://u:s3cret@127.0.0.1:{free_port()}/db"),
         "--tracking-uri: no database server answers", absent=("s3cret",)),
    Case("optuna-sqlite-no-folder", lambda d, s: sweep(d, "--optuna-storage", f"sqlite:///{d}/missing/optuna.db"),
         "does not exist"),
    Case("optuna-sqlite-not-a-database",
         lambda d, s: sweep(d, "--optuna-storage", f"sqlite:///{touched(d / 'notes.db')}"),
         "cannot open"),
    Case("experiment-empty", lambda d, s: sweep(d, "--experiment", ""), "the name is empty"),
    Case("experiment-escapes-the-store", lambda d, s: sweep(d, "--experiment", "../../x"), "one folder name"),
    Case("experiment-absolute", lambda d, s: sweep(d, "--experiment", str(d / "elsewhere")), "one folder name"),
    Case("address-not-ray", lambda d, s: sweep(d, "--address", f"127.0.0.1:{s.not_ray()}"), "not a Ray cluster"),
    Case("trials-unbounded", lambda d, s: sweep(d, "--trials", str(10**11)), "at most 100000"),
    Case("data-seed-beyond-64-bits", lambda d, s: sweep(d, "--data-seed", str(2**64)), "a seed must be"),
    Case("space-empty", lambda d, s: sweep(d, "--space", f"erm={_write(d / 's.yaml', '{}')}"),
         "search space file is empty"),
    Case("space-integer-typed-uniform",
         lambda d, s: sweep(d, "--space", "erm=" + str(_write(d / "s.yaml", "method: erm\nspace:\n  batch_size: "
                                                                            "{type: uniform, low: 16, high: 64}\n"))),
         "integer hyperparameter"),
    Case("tune-config-out-exists", lambda d, s: ["tune", "--method", "erm", "--dataset", str(good_npz(d)), *SWEEP[2:],
                                                  "--config-out", str(touched(d / "best_config.yaml"))],
         "already exist"),
    Case("tune-default-config-out-exists", lambda d, s: tune_over(touched(d / "best_config.yaml")),
         "best_config.yaml already exist"),
    # datasets
    Case("npz-truncated", lambda d, s: train("--dataset", str(truncated(d))), "cannot read"),
    Case("npz-empty", lambda d, s: train("--dataset", str(_write(d / "empty.npz", ""))), "cannot read"),
    Case("npz-all-splits-empty",
         lambda d, s: train("--dataset", str(npz(d, **layout(lambda n: np.zeros((0, 12, 12), np.uint8),
                                                             lambda n: np.zeros(0, np.int64))))),
         "split is empty"),
    Case("npz-object-arrays",
         lambda d, s: train("--dataset", str(npz(d, **layout(lambda n: np.array([None] * n, dtype=object),
                                                             two_classes)))),
         "cannot read"),
    Case("images-1x1", lambda d, s: train("--dataset", str(npz(d, **layout(grey((1, 1)), two_classes)))),
         "at least 4 x 4"),
    Case("images-0-wide", lambda d, s: train("--dataset", str(npz(d, **layout(grey((12, 0)), two_classes)))),
         "must be square"),
    Case("stray-label-without-class-names",
         lambda d, s: train("--dataset", str(npz(d, **layout(grey((12, 12)), with_stray_label)))),
         "not 0..K-1"),
    Case("huge-label-without-class-names",
         lambda d, s: train("--dataset", str(npz(d, **layout(grey((12, 12)),
                                                             lambda n: np.where(two_classes(n) == 1, 10**7, 0))))),
         "not 0..K-1"),
    Case("label-outside-declared-classes",
         lambda d, s: train("--dataset", str(npz(d, **layout(grey((12, 12)), with_stray_label,
                                                             class_names=np.array(["no", "yes"]))))),
         "labels must lie in 0..1"),
    Case("decompression-bomb-png", lambda d, s: train("--dataset", str(bomb_folder(d))), "decompression bomb"),
    # train's own options
    Case("seed-beyond-64-bits", lambda d, s: train("--seed", str(2**64)), "a seed must be"),
    Case("device-cuda-without-gpu", lambda d, s: train("--device", "cuda"), "CUDA GPU(s)", marks=NO_GPU),
    Case("checkpoint-pickle-not-ours",
         lambda d, s: train("--checkpoint-dir", str(foreign_checkpoint(d)), "--resume"), "no checkpoint of this run"),
    Case("checkpoint-tensors-not-ours",
         lambda d, s: train("--checkpoint-dir", str(tensors_not_ours(d)), "--resume"), "no checkpoint of this run"),
    Case("resume-without-checkpoint",
         lambda d, s: train("--checkpoint-dir", str(_mkdir(d / "ckpt")), "--resume"), "no checkpoint in"),
    Case("output-json-exists", lambda d, s: train("--output-json", str(touched(d / "run.json"))), "already exists"),
    Case("output-json-folder", lambda d, s: train("--output-json", str(_mkdir(d / "out"))), "is a folder"),
    Case("log-model-experiment-empty", lambda d, s: train("--log-model", "--experiment", ""), "the name is empty"),
    Case("log-model-wrong-db-password",
         lambda d, s: train("--log-model", "--tracking-uri", wrong_password(s.postgres_url())),
         "the database refused the connection", absent=("not-the-password",)),
    # predict
    Case("predict-output-is-input", lambda d, s: predict(d, input=good_npz(d), output=str(d / "data.npz")),
         "is also the input"),
    Case("predict-output-exists", lambda d, s: predict(d, output=str(touched(d / "out.csv"))), "already exists"),
    Case("predict-output-folder", lambda d, s: predict(d, output=str(_mkdir(d / "out"))), "is a folder"),
    Case("predict-truncated-npz", lambda d, s: predict(d, input=truncated(d)), "cannot read"),
    Case("predict-crafted-weights", lambda d, s: predict(d, model=model_bundle(d, pickle.dumps(Exploit()))),
         "not a focustune model"),
    Case("predict-garbage-weights", lambda d, s: predict(d, model=model_bundle(d, b"\x00" * 64)),
         "not a focustune model"),
    Case("predict-decompression-bomb", lambda d, s: predict(d, input=bomb_png(d / "new" / "x.png")),
         "decompression bomb"),
    Case("predict-device-cuda-without-gpu", lambda d, s: predict(d, "--device", "cuda"), "CUDA GPU(s)", marks=NO_GPU),
    # ui
    Case("ui-unreachable-server", lambda d, s: ["ui", "--tracking-uri", f"http://127.0.0.1:{free_port()}"],
         "unreachable"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def no_work(monkeypatch):
    """Ray's start and training fail the test: a bad input must be refused before either."""
    from focustune.sweeps import cluster
    from focustune.training import Trainer

    def started(*args, **kwargs):
        raise AssertionError("work started before the bad input was refused")

    monkeypatch.setattr(cluster, "init_ray", started)
    monkeypatch.setattr(Trainer, "fit", started)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_exit_2_before_any_work(case, tmp_path, monkeypatch, capsys, services, no_work):
    monkeypatch.chdir(tmp_path)
    argv = case.argv(tmp_path, services)
    before = _files(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("focustune: error: "), err
    assert case.message in lines[0], err
    assert not any(text in err for text in case.absent), err
    assert _files(tmp_path) == before  # nothing written, nothing changed (no pwned file either)


def test_a_validation_split_of_one_class_warns_that_auc_is_undefined(tmp_path, capsys):
    one_class_val = lambda n: two_classes(n) if n == 12 else np.zeros(n, np.int64)  # noqa: E731
    data = npz(tmp_path, **layout(grey((12, 12)), one_class_val, class_names=np.array(["no", "yes"])))
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "focustune: warning: bad: the validation split holds only class 'no', so its AUC is undefined" in err


@pytest.mark.slow
def test_ui_stops_its_mlflow_server_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys
    import urllib.request

    from mlflow import MlflowClient

    from servers import family, stop_group, wait_until

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the store
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "focustune.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        assert wait_until(answers, 120)
        served_by = family(ui.pid) - {ui.pid}
        assert served_by  # MLflow's UI and its web server
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 128 + signal.SIGTERM
        assert wait_until(lambda: not served_by & family(ui.pid) and not any(
            Path(f"/proc/{pid}").exists() for pid in served_by), 30), f"{sorted(served_by)} still run"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # the port is free again
    finally:
        stop_group(ui)
