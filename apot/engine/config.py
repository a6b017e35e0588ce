"""What defines a training run (TrainConfig) and its validation: every apot train setting, its
default and its help, stated once (the command line builds its flags from FIELD_HELP)."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from apot.engine.settings import RUNTIME_FIELDS, train_defaults
from apot.errors import UserError
from apot.models import ARCHS
from apot.quant.convert import FIRST_LAST_POLICIES
from apot.quant.levels import MAX_BITS
from apot.quant.modules import ACT_ALPHA_INIT_BY_RULES, QUANTIZER_RULES, WGT_ALPHA_INIT
from apot.quant.schemes import APOT, FLOAT_BITS, MODEL_BITS, scheme_names

# multistep and cosine step once per epoch, as the authors and the reproducibility report;
# cosine_steps anneals per training step (batch) to zero at the run's last step: the schedule
# of a short fine-tune, whose end point must not be wherever SGD at full LR happened to stop.
# cosine_epochs anneals the same way within each epoch and starts again at the next: every
# epoch ends at such a point, so two epochs' test top-1 show whether the step has converged.
SCHEDULES = ("multistep", "cosine", "cosine_steps", "cosine_epochs")
PER_STEP_SCHEDULES = ("cosine_steps", "cosine_epochs")
CALIBRATIONS = ("none", "mse")
# Defaults shared with a study's settings are the schema's (apot.engine.settings.SCHEMA_DEFAULTS).
DEFAULTS = train_defaults()
# The authors' CIFAR schedule: 300 epochs, the learning rate divided by 10 at these epochs
MILESTONES = (150, 225)


@dataclass
class TrainConfig:
    """Everything that defines a run. Learning rates are per epoch-0 value; epochs count from 0."""
    arch: str
    data: str                      # prepared dataset folder (apot prepare-data)
    out: str                       # run folder
    epochs: int
    bits: int = FLOAT_BITS         # float inner layers
    scheme: str = APOT
    k: int = DEFAULTS["k"]
    first_last: str = DEFAULTS["first_last"]
    batch_size: int = DEFAULTS["batch_size"]
    test_batch_size: int = DEFAULTS["test_batch_size"]
    lr: float = 0.1
    momentum: float = DEFAULTS["momentum"]
    weight_decay: float = 5e-4
    act_alpha_lr: float = DEFAULTS["act_alpha_lr"]  # the authors' CIFAR values
    act_alpha_wd: float = DEFAULTS["act_alpha_wd"]
    wgt_alpha_lr: float = DEFAULTS["wgt_alpha_lr"]
    wgt_alpha_wd: float = DEFAULTS["wgt_alpha_wd"]
    act_alpha_init: float | None = None  # None: the quantizer rules' (8.0 CIFAR, 6.0 ImageNet)
    wgt_alpha_init: float = WGT_ALPHA_INIT
    quantizer_rules: str = "cifar"  # the authors' CIFAR or ImageNet quantizer (apot.quant.modules)
    # "mse": activation thresholds that no --init provides start at the least-squared-error
    # value on the first training batches (apot.quant.calibrate), not at act_alpha_init
    act_alpha_calibration: str = DEFAULTS["act_alpha_calibration"]
    schedule: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: list(MILESTONES))
    gamma: float = DEFAULTS["gamma"]
    init: str | None = None        # progressive initialization from this checkpoint
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    workers: int = 2               # decoding processes (ImageNet only)
    progress: bool = True

    def __post_init__(self):
        if self.act_alpha_init is None and self.quantizer_rules in QUANTIZER_RULES:
            self.act_alpha_init = ACT_ALPHA_INIT_BY_RULES[self.quantizer_rules]

    def validate(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch {self.arch!r} is unknown ({', '.join(ARCHS)})")
        if self.epochs < 0 or (self.epochs == 0 and not self.init):
            problems.append(f"epochs must be at least 1 (0 only with --init: evaluate the "
                            f"initialization as it is), got {self.epochs}")
        if self.act_alpha_calibration not in CALIBRATIONS:
            problems.append(f"act_alpha_calibration must be one of {CALIBRATIONS}, got "
                            f"{self.act_alpha_calibration!r}")
        if self.quantizer_rules not in QUANTIZER_RULES:
            problems.append(f"quantizer_rules must be one of {QUANTIZER_RULES}, got "
                            f"{self.quantizer_rules!r}")
        if self.bits != FLOAT_BITS and self.bits not in MODEL_BITS:
            problems.append(f"bits must be {MODEL_BITS[0]}..{MODEL_BITS[-1]} or {FLOAT_BITS}, "
                            f"got {self.bits}")
        if self.scheme not in scheme_names():
            problems.append(f"scheme must be one of {scheme_names()}, got {self.scheme!r}")
        if not 1 <= self.k <= MAX_BITS:
            problems.append(f"k must be 1..{MAX_BITS}, got {self.k}")
        if self.first_last not in FIRST_LAST_POLICIES:
            problems.append(f"first_last must be one of {FIRST_LAST_POLICIES}, got {self.first_last!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if (self.schedule == "multistep" and self.epochs > 0
                and any(not 0 < m < self.epochs for m in self.milestones)):
            problems.append(f"milestones {self.milestones} must lie between 1 and epochs-1 "
                            f"({self.epochs - 1})")
        if self.batch_size < 1 or self.test_batch_size < 1:
            problems.append("batch sizes must be positive")
        if problems:
            raise UserError("invalid training config: " + "; ".join(problems))

    def result_fields(self) -> dict:
        """The fields a resumed run must share with the interrupted one."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}


# TrainConfig field -> (type, help) of its apot train flag; the defaults are TrainConfig's.
FIELD_HELP = {
    "arch": (str, "architecture"), "data": (str, "prepared dataset folder"),
    "out": (str, "run folder (resumed if it holds a checkpoint)"),
    "epochs": (int, "number of epochs"),
    "bits": (int, f"{MODEL_BITS[0]}..{MODEL_BITS[-1]}, or {FLOAT_BITS} for float inner layers"),
    "scheme": (str, "a registered scheme (apot.quant.schemes)"), "k": (int, "APoT base bit-width"),
    "first_last": (str, "8bit | float"), "batch_size": (int, "training batch"),
    "test_batch_size": (int, "test batch"), "lr": (float, "weights' initial learning rate"),
    "momentum": (float, "SGD momentum"), "weight_decay": (float, "weights' weight decay"),
    "act_alpha_lr": (float, "activation thresholds' lr"),
    "act_alpha_wd": (float, "activation thresholds' weight decay"),
    "wgt_alpha_lr": (float, "weight thresholds' lr"),
    "wgt_alpha_wd": (float, "weight thresholds' weight decay"),
    "act_alpha_init": (float, "initial activation threshold (default: the quantizer rules', "
                              "8.0 cifar, 6.0 imagenet)"),
    "quantizer_rules": (str, "cifar | imagenet: the authors' CIFAR or ImageNet quantizer "
                             "gradients"),
    "act_alpha_calibration": (str, "none | mse: activation thresholds no --init provides "
                                   "start at the least-squared-error value on the first "
                                   "training batches"),
    "wgt_alpha_init": (float, "initial weight threshold (in weight std units)"),
    "schedule": (str, "multistep | cosine (per epoch) | cosine_steps (per batch) | "
                 "cosine_epochs (per batch, restarted each epoch)"),
    "milestones": (int, "epochs where lr *= gamma"),
    "gamma": (float, "multistep factor"),
    "init": (str, "initialization checkpoint (progressive, or a released model; with "
                  "--epochs 0 the run is that model as it is)"),
    "seed": (int, "seed of init, order and augmentation"), "device": (str, "auto | cpu | cuda"),
    "threads": (int, "CPU threads of torch and numba (default: torch's: OMP_NUM_THREADS, "
                     "else the core count)"),
    "workers": (int, "image-decoding processes (ImageNet)"),
}

REQUIRED_FIELDS = ("arch", "data", "out", "epochs")  # the fields without a default


def field_defaults() -> dict:
    """Each TrainConfig field's default; None for REQUIRED_FIELDS."""
    return {f.name: (f.default_factory() if f.default_factory is not MISSING
                     else None if f.default is MISSING else f.default)
            for f in fields(TrainConfig)}
