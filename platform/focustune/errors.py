"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


class FocusTuneError(Exception):
    """Base class for errors caused by the user's input or environment."""

    exit_code = 2


class ConfigError(FocusTuneError):
    """A hyperparameter, option or configuration value is not acceptable."""


class DataError(FocusTuneError):
    """A dataset cannot be found, read or used."""


class TrainingDiverged(FocusTuneError):
    """The training loss became NaN or infinite."""

    exit_code = 3


class ResumeRefused(FocusTuneError):
    """What ``--resume`` finds under the storage is not what this driver wrote (or not readable as it):
    nothing of it is loaded."""


class SweepInterrupted(FocusTuneError):
    """The Tune run returned before the sweep's trials had ended (Tune ends its run quietly on SIGINT or
    SIGUSR1): the state is kept and the sweep is not marked done, so ``--resume`` goes on."""

    exit_code = 130
