"""The recorded protocols of the reproduction suite: one claim of a paper each, as the runs that
test it (arms x seeds), every run a plain ``focustune train`` command line.

An arm may try a grid of values of one hyperparameter in every run (``Arm.grid``): each point is its
own run, and the one with the best validation score stands for the arm in that run (selection on
validation, as a tuned method's). A setting may draw its data anew in every run
(``Setting.data_seed_per_run``: the run's seed is its data seed, the same for every arm, so arms
still pair). ``Claim.test_monitor`` records the test metrics after every epoch beside the run
(``monitor.py``), for claims about epochs to a test accuracy; selection never sees them.

Each claim's ``fidelity`` table says, aspect by aspect, what its paper did, what the runs do, and why
they differ where they do (the README's fidelity tables are generated from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Seeds of every claim's runs (the same for every arm, so runs pair by seed).
SEEDS = (1, 2, 3)
QUICK_SEEDS = (1, 2)


@dataclass(frozen=True)
class Fidelity:
    """A row of a claim's fidelity table: the paper's protocol, ours, and why they differ ("": they do not)."""

    aspect: str
    paper: str
    ours: str
    why: str = ""


@dataclass(frozen=True)
class Arm:
    """One configuration compared in a claim: a method with its options."""

    label: str
    method: str
    options: tuple[str, ...] = ()
    #: Options that replace some of ``options`` in a ``--quick`` run (a later ``--set`` wins).
    quick_options: tuple[str, ...] = ()
    #: ``KEY=VALUE`` points tried in every run, the best on validation standing for the arm (empty: none).
    grid: tuple[str, ...] = ()
    #: The points of a ``--quick`` run (None: ``grid``).
    quick_grid: tuple[str, ...] | None = None

    def points(self, quick: bool) -> tuple[str, ...]:
        return self.quick_grid if quick and self.quick_grid is not None else self.grid


@dataclass(frozen=True)
class Setting:
    """A dataset set-up that every arm runs on (a claim may have several, e.g. balanced and imbalanced)."""

    label: str
    dataset: str
    options: tuple[str, ...] = ()
    #: This setting's validation-accuracy target of the epochs-to-target table (default: the claim's).
    target_acc: float | None = None
    #: Every run draws its data with its own seed (``--data-seed SEED``), e.g. a profile redrawn per run.
    data_seed_per_run: bool = False
    #: This setting's epochs per run (None: the claim's), e.g. more for a much smaller dataset.
    epochs: int | None = None


@dataclass(frozen=True)
class Claim:
    name: str
    paper: str
    claim: str
    data: str  # "torchvision" or "medmnist": which data folder the runs read
    settings: tuple[Setting, ...]
    arms: tuple[Arm, ...]
    common: tuple[str, ...]  # options every run gets
    epochs: int
    quick_epochs: int
    baseline: str
    fidelity: tuple[Fidelity, ...]
    #: Fixed accuracy target of the epochs-to-target table (learn2mix), else None.
    target_acc: float | None = None
    #: Without ``target_acc``: the target is the baseline arm's mean accuracy at this epoch (None: no table).
    target_epoch: int | None = None
    extra: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = SEEDS
    quick_seeds: tuple[int, ...] = QUICK_SEEDS
    #: Record the test metrics after every epoch (``monitor.py``; never used for selection).
    test_monitor: bool = False

    def runs(self, quick: bool) -> list[tuple[Setting, Arm, int]]:
        return [(s, a, seed) for s in self.settings for a in self.arms
                for seed in (self.quick_seeds if quick else self.seeds)]

    def argv(self, setting: Setting, arm: Arm, seed: int, data_dir: str, quick: bool,
             point: str | None = None) -> list[str]:
        """The ``focustune train`` arguments of one run (without ``--output-json``); ``point``: a grid point."""
        sets = _merged_sets([*self.common, *arm.options, *(arm.quick_options if quick else ()),
                             *(("--set", point) if point else ())])
        data_seed = ("--data-seed", str(seed)) if setting.data_seed_per_run else ()
        epochs = self.quick_epochs if quick else setting.epochs or self.epochs
        return ["train", "--method", arm.method, "--dataset", setting.dataset, "--data-dir", data_dir,
                *setting.options, *data_seed, "--epochs", str(epochs),
                "--seed", str(seed), *sets, "--quiet"]


def _merged_sets(options: list[str]) -> list[str]:
    """``--set KEY=VALUE`` pairs with a later value of a key replacing an earlier one."""
    values: dict[str, str] = {}
    for flag, item in zip(options[::2], options[1::2]):
        assert flag == "--set", f"protocol options are --set pairs, got {flag}"
        key, _, value = item.partition("=")
        values[key] = value
    return [part for key, value in values.items() for part in ("--set", f"{key}={value}")]


def _sets(**values: object) -> tuple[str, ...]:
    return tuple(item for key, value in values.items() for item in ("--set", f"{key}={value}"))


#: LOW's protocol (paper Sec. 5.1; the authors' main.py for the weight decay): LeNet-5, SGD with Nesterov
#: momentum 0.9, lr 1e-3, weight decay 1e-4, batch 256.
LENET_SGD = _sets(model="lenet5", optimizer="sgd", momentum=0.9, nesterov="true", lr=1e-3, weight_decay=1e-4,
                  batch_size=256, amp="false")
#: LOW's lambda grid (paper Sec. 4.2), tried in every run, the best on validation standing for the arm.
LOW_GRID = ("lam=1", "lam=0.5", "lam=0.1", "lam=0.01")
LOW_QUICK_GRID = ("lam=1", "lam=0.01")
#: learn2mix's protocol (paper App. C.4, Table 3): LeNet-5, Adam, lr 1e-5, batch 1000.
LENET_ADAM = _sets(model="lenet5", optimizer="adam", lr=1e-5, batch_size=1000, amp="false")
#: learn2mix's target: the paper's classical training reaches its Table 1 target test accuracy after 20 epochs
#: (learn2mix after 14). The value is not recorded in ../shared, so the target is the accuracy our erm arm reaches
#: at that epoch (mean over the runs); set ``target_acc`` on the claim once the paper's value is known.
LEARN2MIX_TARGET_EPOCH = 20
FIVE_RUNS = (1, 2, 3, 4, 5)
#: IMET as the paper runs it on PneumoniaMNIST: 2,800 samples per iteration, error rates on an equal-class subsample.
IMET_PAPER = _sets(iterations=3, sample_count=2800, error_sample="balanced")
#: 2,000 GAN steps of batch 16 per class (FastGAN's reference: 50,000 of batch 8, hours per class on a CPU);
#: 1,000 already give recognisable chest X-rays (methods/mdgan/), and every run reports its GAN check.
MDGAN = _sets(finetune_epochs=4, gan_steps=2000, gan_batch_size=16)
MDGAN_QUICK = _sets(finetune_epochs=1, gan_steps=5)

CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim(
        name="low-mnist", paper="LOW (Santiago et al., Pattern Recognition 2021)",
        claim="on imbalanced MNIST (at most NC/2^k training images per class, class counts redrawn in each of 5 "
              "runs; LeNet-5, SGD Nesterov 0.9, lr 1e-3, batch 256, 100 epochs), LOW's test error on the balanced "
              "official test set is significantly lower than plain training's and focal loss's (Sec. 5.1.2, Fig. 7; "
              "no numbers in the text: the 0.85% vs 1.74% of the authors' repository README are on the balanced "
              "full MNIST, not this claim)",
        data="torchvision",
        settings=(Setting("step-imbalanced MNIST (redrawn per run)", "mnist", ("--imbalance", "step"),
                          data_seed_per_run=True),),
        arms=(Arm("low", "low", _sets(lam_unit="authors_code"), grid=LOW_GRID, quick_grid=LOW_QUICK_GRID),
              Arm("low (our units)", "low", _sets(lam_unit="ours"), grid=LOW_GRID, quick_grid=LOW_QUICK_GRID),
              Arm("erm", "erm"), Arm("focal", "focal")),
        common=LENET_SGD, epochs=100, quick_epochs=1, baseline="erm", seeds=FIVE_RUNS,
        fidelity=(
            Fidelity("data", "MNIST, at most NC/2^k training images per class (k in 0..9, one per class), class "
                     "counts redrawn in each run", "the same (`--imbalance step`), drawn with the run's seed as data "
                     "seed, so every arm of a run trains on the same draw"),
            Fidelity("validation", "not stated", "10% of each class of MNIST's training split, held out before the "
                     "profile (balanced); it selects the best epoch and the lambda", "selection needs a split that "
                     "is not test"),
            Fidelity("test set", "MNIST's balanced official test set", "the same"),
            Fidelity("model, optimiser", "LeNet-5, SGD Nesterov 0.9, lr 1e-3, batch 256, 100 epochs; weight decay "
                     "1e-4 (the authors' main.py)", "the same, float32"),
            Fidelity("lambda", "best of {1, 0.5, 0.1, 0.01}; the authors' code takes g from the batch-mean loss",
                     "the same grid in the authors' code's units (arm `low`, lambda x M^2 per sample; it decides "
                     "the verdict) and in the units of the paper's equations (arm `low (our units)`), best on "
                     "validation in each run", "the paper's text and its code disagree on the unit: both are run"),
            Fidelity("runs", "5", "5 (seeds 1-5)"),
            Fidelity("evidence", "Fig. 7", "paired t-tests by seed against erm and focal, one Holm family",
                     "the figure gives no test")),
    ),
    Claim(
        name="learn2mix-mnist", paper="learn2mix (arXiv 2412.16482)",
        claim="with LeNet-5 and Adam (lr 1e-5, batch 1000, mixing rate 0.1) on MNIST, learn2mix reaches the target "
              "test accuracy in fewer epochs than classical training, class-weighted focal loss and SMOTE "
              "(14 vs 20, 18, 19 epochs)",
        data="torchvision", settings=(Setting("MNIST", "mnist"),),
        arms=(Arm("learn2mix", "learn2mix", _sets(mixing_rate=0.1, update_every="epoch")), Arm("erm", "erm"),
              Arm("focal (class-weighted)", "focal", _sets(gamma=2, alpha=1)),
              Arm("smote", "smote", _sets(epoch_samples="original"))),
        common=LENET_ADAM, epochs=30, quick_epochs=1, baseline="erm", target_epoch=LEARN2MIX_TARGET_EPOCH,
        seeds=FIVE_RUNS, test_monitor=True,
        fidelity=(
            Fidelity("data", "the full, balanced MNIST (60,000 training images)", "MNIST's training split less "
                     "10% held out for validation (54,000)", "selection needs a split that is not test"),
            Fidelity("model, optimiser", "LeNet-5, Adam lr 1e-5, batch 1000, cross-entropy (App. C.4, Table 3)",
                     "the same, float32"),
            Fidelity("learn2mix", "mixing rate 0.1; the mixing parameters move once per epoch (Algorithm 1)",
                     "the same (`update_every=epoch`)", "the authors' code moves them after every batch "
                     "(`update_every=batch`)"),
            Fidelity("baselines", "classical training, class-weighted focal loss (C.2), SMOTE (C.3)",
                     "erm; focal with inverse-frequency class weights (`alpha=1`, gamma 2); smote "
                     "(imbalanced-learn's SMOTE, epochs as long as the others', as the authors' code)"),
            Fidelity("epochs", "until the target (the authors' code: 60)", "30", "the measure needs each curve "
                     "up to the target only (erm reaches it at epoch 20 by its definition below); a run short of it "
                     "after 30 epochs is censored at 31"),
            Fidelity("runs", "5", "5 (seeds 1-5)"),
            Fidelity("measure", "epochs to the target test accuracy (Table 1: 14 vs 20, 18, 19)", "the first epoch "
                     "whose test accuracy (recorded after every epoch, never used for selection) reaches the "
                     "target; paired t-tests by seed, one Holm family", "the table gives no test"),
            Fidelity("target", "Table 1's test accuracy, which classical training reaches after 20 epochs",
                     f"the mean test accuracy of our erm runs after epoch {LEARN2MIX_TARGET_EPOCH}", "the paper's "
                     "value is not recorded in ../shared; with it, set target_acc (the run files stay valid)")),
    ),
    Claim(
        name="imet-pneumonia", paper="IMET (arXiv 2507.02979)",
        claim="IMET's CNN (30,047 parameters, 2,800 samples per iteration) reaches 90.2% test accuracy on "
              "PneumoniaMNIST, 1.6 points above the same CNN trained plainly (the 90.2% as ../shared/data/medmnist/"
              "README.md quotes the paper; the 1.6-point gain as issue 17 does, not checked against the paper here)",
        data="medmnist", settings=(Setting("PneumoniaMNIST", "pneumoniamnist"),),
        arms=(Arm("imet (errors on val)", "imet", IMET_PAPER + _sets(error_split="val"), _sets(iterations=2)),
              Arm("imet (errors on probe)", "imet", IMET_PAPER + _sets(error_split="probe"), _sets(iterations=2)),
              Arm("erm", "erm"),
              # not in the claim: class-balanced sampling alone, as IMET's equal-class first iteration does
              Arm("oversample (class-balanced)", "oversample")),
        common=_sets(model="imet_cnn", head="sigmoid", amp="false"), epochs=6, quick_epochs=2, baseline="erm",
        seeds=(1, 2, 3, 4, 5),
        fidelity=(
            Fidelity("data", "PneumoniaMNIST", "the same (official splits)"),
            Fidelity("model", "CNN: Conv2D(32), MaxPool, Conv2D(32), MaxPool, Dropout(0.5), Dense, output; "
                     "30,047 parameters", "`imet_cnn` with the one-unit sigmoid head: 7x7 'same' and 4x4 'valid' "
                     "convolutions, Dense(15), exactly 30,047", "kernel sizes and dense width are not given: the "
                     "only 2x2-pooling choice found that gives 30,047"),
            Fidelity("samples per iteration", "2,800", "2,800 (`sample_count`), drawn within a class without "
                     "replacement while it has enough images"),
            Fidelity("error rates", "on an equal-class subsample", "on an equal-class subsample of validation "
                     "(arm 'errors on val') or of a probe split held out of training (arm 'errors on probe')"),
            Fidelity("budget", "not recorded here", "3 iterations of 2 epochs; erm the same 6 epochs; Adam lr 1e-3, "
                     "batch 128 (platform defaults), float32", "the paper's epochs are not recorded in ../shared"),
            Fidelity("runs", "not recorded here", "5 (seeds 1-5)", "as LOW's and learn2mix's papers"),
            Fidelity("comparator", "ResNet-50 among others", "erm on the same CNN and budget", "ResNet-50 is the "
                     "issue's GPU part (no GPU lent)")),
        extra={"paper_acc": 0.902, "claimed_effect": 0.016}),
    Claim(
        name="mdgan-medmnist", paper="mistake-driven GAN augmentation (ICLR 2022 submission)",
        claim="\"By employing Generative Adversarial Networks (GANs) to augment these deficit classes, we finetune the "
              "model towards a balanced performance among the different classes and an overall better performance on "
              "the whole dataset\" (abstract; issue 17 reads its Table 1 as gains over the same model trained without "
              "the mistake-driven augmentation); tested on the augmented class's test recall and on the overall test "
              "accuracy after the fine-tuning, both against an equal-budget erm control with the same head, SAM, "
              "learning rate and epochs",
        data="medmnist",
        settings=(Setting("PneumoniaMNIST (30% training subset)", "pneumoniamnist", ("--imbalance", "classes=0,1:0.3")),
                  # 546 training images: SAM at lr 0.05 learns the malignant class only after ~35-55 epochs
                  Setting("BreastMNIST", "breastmnist", epochs=60)),
        arms=(Arm("mdgan (worst class on val)", "mdgan", MDGAN + _sets(selection_split="val"), MDGAN_QUICK),
              Arm("mdgan (worst class on probe)", "mdgan", MDGAN + _sets(selection_split="probe"), MDGAN_QUICK),
              Arm("erm (SpinalNet, SAM)", "erm", _sets(optimizer="sam", head="spinal", lr=0.05))),
        common=_sets(model="small_cnn", batch_size=32, amp="false"), epochs=12, quick_epochs=2,
        baseline="erm (SpinalNet, SAM)",
        fidelity=(
            Fidelity("data", "the paper's datasets", "PneumoniaMNIST (30% of each training class) and BreastMNIST",
                     "the paper's datasets are not available here"),
            Fidelity("GAN", "FastGAN per deficit class", "FastGAN, 2,000 steps of batch 16 per augmented class; per "
                     "class a quality check (the share of GAN images the pretrained classifier labels as the class, "
                     "against real images') and a sample grid in MLflow", "FastGAN's reference, 50,000 steps of "
                     "batch 8, takes hours per class on a CPU (the GPU part); 1,000 steps already give "
                     "recognisable chest X-rays"),
            Fidelity("head, optimiser", "Progressive SpinalNet with SELU, SAM", "our SpinalNet head, SAM lr 0.05, "
                     "batch 32, the small_cnn backbone", "`head=spinal_selu` is the paper's head; at batch 128 "
                     "SAM with lr 0.05 left every run predicting one class"),
            Fidelity("budget", "not recorded here", "PneumoniaMNIST 12 epochs (8 pretraining + 4 fine-tuning); "
                     "BreastMNIST 60 (56 + 4)", "CPU budget; on BreastMNIST's 546 images the control predicted the "
                     "majority class in every 12-epoch run, and learns the malignant class after 35-55 epochs"),
            Fidelity("control", "the same model trained without the mistake-driven augmentation (Table 1)",
                     "erm with the same head, SAM, learning rate and 12 epochs"),
            Fidelity("evidence", "Table 1", "paired t-tests by seed against the control of the augmented class's "
                     "test recall and the test accuracy after fine-tuning, one Holm family", "the table gives no "
                     "test"),
            Fidelity("runs", "not recorded here", "3 (seeds 1-3)", "CPU budget")),
    ),
)}
