"""A logged model served where focustune is not installed: ``pip install -r requirements.txt`` in the model
folder, then ``mlflow models serve --env-manager local``, answering a real HTTP request.

The fresh virtual environment takes the test environment's packages to spare the install, but only
the distributions the model's requirements.txt resolves to (each requirement and, recursively, its
dependencies, read from the installed metadata), linked into a folder that a ``.pth`` file names. A
plain path line in a ``.pth`` adds that folder to ``sys.path`` without processing the ``.pth`` files
(editable finders) inside it, and the folder holds nothing of focustune: ``import focustune`` fails
there, which the test checks before the model is involved. So the server imports focustune from the
model only, and a requirement missing from requirements.txt breaks the test.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from focustune.cli import main
from focustune.tracking.model_package import download_model, requirements
from servers import free_port, start, stop_group, tiny_npz, wait_until

#: Environment variables that would let a subprocess find focustune or another store, or stop .pyc files.
LEAKS = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "PYTHONSTARTUP", "VIRTUAL_ENV",
         "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def test_model_requirements_are_public_packages():
    """No focustune line (no index has it); torch, torchvision and MLflow pinned; each one installed here."""
    from packaging.requirements import Requirement

    names = [Requirement(line).name for line in requirements()]
    assert names == ["torch", "torchvision", "mlflow", "numpy", "pandas", "pillow", "pyyaml"]
    assert all("==" in line for line in requirements()[:3])
    for name in names:
        metadata.distribution(name)  # raises when not installed


def _closure(lines: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``lines`` (requirement lines) resolve to, with their dependencies."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    pending = [Requirement(line) for line in lines]
    while pending:
        requirement = pending.pop()
        key = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if key in found:
            continue
        try:
            found[key] = dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"the test environment lacks {requirement.name}, which the model's requirements need")
        extras = requirement.extras or {""}
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(needed)
    return list(found.values())


def _link_packages(distributions: list[metadata.Distribution], folder: Path) -> None:
    """Link each distribution's top-level entries (packages, modules, its .dist-info) into ``folder``."""
    folder.mkdir()
    for dist in distributions:
        root = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or []}
        for top in tops - {"..", "__pycache__"}:
            target = folder / top
            if (root / top).exists() and not target.exists():
                target.symlink_to(root / top)
        assert "focustune" not in {p.name for p in folder.iterdir()}


def _venv(folder: Path, packages: Path) -> Path:
    """A fresh virtual environment (with pip) whose ``.pth`` names ``packages``; returns its python."""
    made = subprocess.run([sys.executable, "-m", "venv", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment with pip here: {made.stderr[-500:]}")
    python = folder / "bin" / "python"
    # ensurepip's own setuptools (65 with Python 3.11) would shadow the linked one, older than torch needs
    subprocess.run([str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"], capture_output=True,
                   check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "test_environment_packages.pth").write_text(f"{packages}\n")
    # packages satisfied from the linked folder install no command into this environment's bin/: what
    # uvicorn's console script does (`mlflow models serve` runs `uvicorn` from PATH), with this python
    script = folder / "bin" / "uvicorn"
    script.write_text(f"#!{python}\nimport sys\nfrom uvicorn.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return python


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_a_model_is_served_where_focustune_is_not_installed(tmp_path, monkeypatch, capsys):
    for name in LEAKS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = tiny_npz(tmp_path / "mine.npz")
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--set", "batch_size=16", "--quiet",
                 "--log-model", "--tracking-uri", store]) == 0
    uri = re.search(r"model (models:/\S+)", capsys.readouterr().out).group(1)
    (tmp_path / "download").mkdir()
    model = download_model(uri, store, tmp_path / "download")
    assert (model / "code" / "focustune" / "inference.py").is_file()
    assert not list(model.rglob("__pycache__"))  # so that any .pyc below comes from the server
    lines = [line for line in (model / "requirements.txt").read_text().splitlines() if line.strip()]
    assert lines == requirements() and not any(line.startswith("focustune") for line in lines)

    _link_packages(_closure(lines), tmp_path / "packages")
    python = _venv(tmp_path / "venv", tmp_path / "packages")
    bin_dir = str(tmp_path / "venv" / "bin")
    path = os.pathsep.join([bin_dir, *(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                       if p and Path(p).resolve() != Path(sys.executable).parent.resolve())])
    monkeypatch.setenv("PATH", path)
    outside = tmp_path / "elsewhere"  # the working folder of every command below: no focustune in it
    outside.mkdir()

    def run(*args: str, cwd: Path = outside) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, timeout=600)

    absent = run("-c", "import focustune")
    assert absent.returncode != 0 and "No module named 'focustune'" in absent.stderr, absent.stdout + absent.stderr

    # --no-index: nothing is fetched; every line must be satisfied already, and focustune is not a line
    installed = run("-m", "pip", "install", "--no-index", "--disable-pip-version-check", "-r", "requirements.txt",
                    cwd=model)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    port = free_port()
    log = tmp_path / "serve.log"
    server = start([str(python), "-m", "mlflow", "models", "serve", "-m", str(model), "--env-manager", "local",
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], log, cwd=outside)
    try:
        up = wait_until(lambda: _get(f"http://127.0.0.1:{port}/ping") or server.poll() is not None, 300, 1.0)
        assert up and server.poll() is None, log.read_text()[-3000:]
        example = (model / "serving_input_example.json").read_bytes()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=example, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    finally:
        stop_group(server)

    predictions = answer["predictions"]
    assert len(predictions) == len(json.loads(example)["inputs"])
    for row in predictions:
        probs = {k: v for k, v in row.items() if k.startswith("prob_")}
        assert set(row) == {"class", *probs} and row["class"] in {"0", "1", "2"}
        assert sorted(probs) == ["prob_0", "prob_1", "prob_2"] and abs(sum(probs.values()) - 1) < 1e-4
    # the served model applies the bundle's temperature and operating point (offsets), as `focustune predict` does
    import numpy as np

    from focustune.inference import bundle_folder, load_bundle

    predictor = load_bundle(bundle_folder(model))
    assert predictor.card.temperature != 1.0 and predictor.card.offsets is not None
    classes, expected = predictor.predict_array(np.array(json.loads(example)["inputs"], dtype=np.uint8))
    assert [row["class"] for row in predictions] == [predictor.card.class_names[c] for c in classes]
    np.testing.assert_allclose([[row[f"prob_{c}"] for c in "012"] for row in predictions], expected, rtol=1e-5)
    # the server compiled focustune from the model's code/ folder (nothing else imported it from there)
    compiled = {p.name.split(".")[0] for p in (model / "code" / "focustune").glob("__pycache__/*.pyc")}
    assert {"__init__", "inference"} <= compiled, log.read_text()[-3000:]
