"""The repository layout does not shadow the standard library, and the package imports cleanly."""

import subprocess
import sys

from conftest import REPO


def test_stdlib_platform_still_works_from_repo_root():
    code = "import platform, uuid; print(platform.system()); import focustune; print(focustune.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    system, location = out.stdout.split()
    assert system == __import__("platform").system()
    assert "platform/focustune" in location.replace("\\", "/")


def test_platform_folder_is_not_a_package():
    assert (REPO / "platform" / "focustune" / "__init__.py").is_file()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_no_module_named_after_stdlib_or_dependency():
    forbidden = {"platform", "tune", "ray", "optuna", "mlflow", "torch", "yaml", "json", "random",
                 "statistics", "types", "logging", "medmnist", "sklearn"}
    modules = {p.stem for p in (REPO / "platform" / "focustune").rglob("*.py")}
    assert not modules & forbidden


def test_trainer_and_methods_do_not_import_tuning_libraries():
    code = ("import sys, focustune.training, focustune.methods, focustune.cli; "
            "print(sorted(m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_study_queue_search_and_scheduling_import_without_torch():
    code = ("import sys, focustune.sweeps.studies, focustune.sweeps.search, focustune.sweeps.schedulers, "
            "focustune.sweeps.progress, focustune.sweeps.trial_config; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_analysis_reads_runs_without_torch():
    """``focustune_analysis.collect`` (what ``compare`` and the notebooks import) loads no torch."""
    code = "import sys, focustune_analysis.collect, focustune.records; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
