"""GANs trained once and reused: the shared store (complete entries only, one producer at a time, a
dead producer's claim taken over), the GAN's address (what it depends on, and nothing else), and mdgan
runs that share a store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import REPO, make_dataset
from focustune.config import resolve
from focustune.methods.mdgan import MDGAN
from focustune.methods.mdgan.fastgan import FastGAN
from focustune.methods.mdgan.stored import gan_address, gan_recipe
from focustune.shared_store import CLAIM, MARKER, SharedStore
from focustune.tracking_schema import gan_tag
from focustune.training import Trainer


def _producer(calls: list, payload: bytes = b"weights", pause_s: float = 0.0):
    def produce():
        calls.append(threading.get_ident())
        time.sleep(pause_s)
        return payload, {"recipe": "r"}
    return produce


def test_an_entry_is_produced_once_then_loaded(tmp_path):
    calls: list = []
    first = SharedStore(str(tmp_path)).obtain("a1", _producer(calls))
    again = SharedStore(str(tmp_path)).obtain("a1", _producer(calls))
    assert first.produced and not again.produced and len(calls) == 1
    assert again.data == b"weights" and again.marker["recipe"] == "r"
    assert not (tmp_path / "a1" / CLAIM).exists()  # released after publishing


def test_an_unfinished_or_altered_entry_is_never_loaded(tmp_path):
    store = SharedStore(str(tmp_path))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "data-0.bin").write_bytes(b"half of the weights")  # killed before its marker
    assert store.load("half") is None
    calls: list = []
    store.obtain("whole", _producer(calls))
    marker = json.loads((tmp_path / "whole" / MARKER).read_text())
    (tmp_path / "whole" / marker["data"]).write_bytes(b"weightz")  # not the bytes the marker names
    assert store.load("whole") is None
    assert store.obtain("whole", _producer(calls)).data == b"weights" and len(calls) == 2


def test_concurrent_runs_produce_an_entry_once(tmp_path):
    calls: list = []
    results: list = []
    stores = [SharedStore(str(tmp_path), poll_s=0.05) for _ in range(3)]  # three runs (owners)
    threads = [threading.Thread(target=lambda s=s: results.append(s.obtain("a", _producer(calls, pause_s=0.5))))
               for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(r.produced for r in results) == [False, False, True]
    assert {r.data for r in results} == {b"weights"}


def test_the_claim_of_a_dead_producer_is_taken_over_when_its_lease_ends(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / CLAIM).write_text(json.dumps({"owner": "gone", "expires": time.time() + 0.5}))
    calls: list = []
    started = time.monotonic()
    entry = SharedStore(str(tmp_path), poll_s=0.1).obtain("a", _producer(calls))
    assert entry.produced and len(calls) == 1 and time.monotonic() - started >= 0.4


KILLED_TRAINING = """
import sys, torch
from focustune.methods.mdgan.stored import obtain_gan
from focustune.shared_store import SharedStore
real = torch.randint(0, 256, (8, 1, 12, 12), dtype=torch.uint8)
obtain_gan(SharedStore(sys.argv[1], lease_s=2.0), real, 0, 100_000, 4, seed=0, device=torch.device("cpu"))
"""


def test_a_gan_killed_mid_training_is_never_loaded_and_is_trained_again(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f"*/{CLAIM}")) and time.monotonic() < deadline:  # training has begun
            assert proc.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    [claim] = list(tmp_path.glob(f"*/{CLAIM}"))
    address = claim.parent.name
    store = SharedStore(str(tmp_path), poll_s=0.2)
    assert store.load(address) is None and not (claim.parent / MARKER).exists()
    calls: list = []
    assert store.obtain(address, _producer(calls)).produced and len(calls) == 1  # after the 2 s lease


def test_the_address_follows_what_the_gan_depends_on_and_nothing_else():
    real = torch.randint(0, 256, (8, 1, 12, 12), dtype=torch.uint8)
    gan = FastGAN(1, 12, seed=0)
    base = gan_address(gan_recipe(real, 1, 10, 4, 0, gan))
    assert gan_address(gan_recipe(real.clone(), 1, 10, 4, 0, FastGAN(1, 12, seed=0))) == base
    changed = [gan_recipe(real, 2, 10, 4, 0, gan), gan_recipe(real, 1, 11, 4, 0, gan),
               gan_recipe(real, 1, 10, 8, 0, gan), gan_recipe(real, 1, 10, 4, 1, gan),
               gan_recipe(real[:7], 1, 10, 4, 0, gan), gan_recipe(255 - real, 1, 10, 4, 0, gan),
               gan_recipe(real, 1, 10, 4, 0, FastGAN(1, 12, seed=0, width=8))]
    assert len({gan_address(r) for r in changed} | {base}) == len(changed) + 1


TINY = {"epochs": 3, "finetune_epochs": 1, "batch_size": 16, "optimizer": "adam", "gan_classes": 3,
        "gan_steps": 3, "gan_batch_size": 4, "amp": False}


def _mdgan(dataset, store, seed=0, **overrides):
    config, params = resolve(MDGAN, {**TINY, **overrides})
    trainer = Trainer(MDGAN(params), config, dataset, seed=seed, gan_store=store)
    trainer.fit()
    return trainer


@pytest.mark.slow
def test_runs_differing_in_classifier_settings_reuse_the_gans_a_new_gan_setting_does_not(tmp_path):
    dataset = make_dataset((30, 10, 6), eval_per_class=8)
    store = SharedStore(str(tmp_path))
    first = _mdgan(dataset, store, lr=1e-3)
    second = _mdgan(dataset, store, lr=3e-3, sam_rho=0.2, generated_share=1.0)  # not what a GAN depends on
    alone = _mdgan(dataset, None, lr=1e-3)
    tags1, tags2 = first.method.tags(), second.method.tags()
    assert sorted(first.method.classes) == sorted(second.method.classes) == [0, 1, 2]
    for c in range(3):
        assert tags1[gan_tag(c, "address")] == tags2[gan_tag(c, "address")]
        assert (tags1[gan_tag(c, "source")], tags2[gan_tag(c, "source")]) == ("trained", "reused")
        assert 0.0 <= float(tags2[gan_tag(c, "generated_as_class")]) <= 1.0
    assert len(list(tmp_path.glob(f"*/{MARKER}"))) == 3
    # a reused GAN generates what training it in the run would have: the same images
    assert torch.equal(first.method.generated.images, alone.method.generated.images)
    reused = second.method.generated
    assert torch.equal(reused.images[reused.labels == 2][:3], first.method.generated.images[
        first.method.generated.labels == 2][:3])
    assert first.history[-1]["method"]["gan_reused"] == [False] * 3
    assert second.history[-1]["method"]["gan_reused"] == [True] * 3

    _mdgan(dataset, store, gan_steps=4)  # a GAN setting: new GANs
    _mdgan(dataset, store, seed=1)  # a seed re-run: its own GANs
    assert len(list(tmp_path.glob(f"*/{MARKER}"))) == 9


def test_train_reuses_a_gan_folder(tmp_path, capsys):
    from focustune.cli import main
    from servers import tiny_npz

    data = tiny_npz(tmp_path / "tiny.npz")
    args = ["train", "--method", "mdgan", "--dataset", str(data), "--epochs", "2", "--gan-store",
            str(tmp_path / "gans"), *(f"--set={k}={v}" for k, v in {**TINY, "epochs": 2}.items() if k != "epochs")]
    assert main(args) == 0
    assert "trained, kept in" in capsys.readouterr().err
    assert main([*args, "--set", "lr=0.01"]) == 0
    assert capsys.readouterr().err.count("reused from") == 3


def test_a_trials_mlflow_run_names_the_gan_it_used(tmp_path):
    """``Method.tags`` -> the trial's last report -> its run's tags, under the names tracking_schema defines."""
    from mlflow import MlflowClient

    from focustune.records import TrialReport
    from focustune.sweeps.trainable import with_final
    from focustune.tracking.trial_runs import TrialRuns
    from focustune.tracking_schema import TAG

    trainer = _mdgan(make_dataset((30, 10, 6), eval_per_class=8), SharedStore(str(tmp_path / "gans")), gan_classes=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("gans", artifact_location=(tmp_path / "artifacts").as_uri())
    tracking = TrialRuns(uri, experiment, {}, {"sweep_id": "s"}, params_for=dict)
    tracking.runs["t1"] = client.create_run(experiment).info.run_id
    last = TrialReport(epoch=trainer.epoch, total_epochs=trainer.total_epochs, objective=0.0, busy_since=0.0,
                       busy_until=0.0, full_budget=True)
    tracking.trial_completed("t1", with_final(last, trainer).to_result())
    tracking._apply(tracking.queue[-1])
    tags = client.get_run(tracking.runs["t1"]).data.tags
    [c] = trainer.method.classes
    assert tags[TAG + gan_tag(c, "address")] == trainer.method.gans[0]["address"]
    assert (tmp_path / "gans" / tags[TAG + gan_tag(c, "address")] / MARKER).exists()
    assert tags[TAG + gan_tag(c, "source")] == "trained"
    assert float(tags[TAG + gan_tag(c, "generated_as_class")]) == pytest.approx(
        trainer.method.quality["generated_as_class"][0], abs=1e-4)
