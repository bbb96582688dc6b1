"""What every analysis script shares: its command line and its scale.

A script runs at one of three scales:

``full``   the paper's setting: MNIST read from local IDX files, more steps,
           wider networks, K = 1000 importance samples, any device;
``quick``  the embedded data (synthetic Gaussians, scikit-learn's 8x8
           digits) and short training, a minute or so on a laptop CPU;
``tiny``   a handful of steps on a few hundred points, for the test suite
           only (numbers are meaningless; the code paths are the real ones).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

SCALES = ("tiny", "quick", "full")

#: Replicates per configuration when ``--seeds`` is not given (tiny: two, so the spread code runs).
DEFAULT_SEEDS = {"tiny": 2, "quick": 3, "full": 5}

#: Objectives of the non-linear experiments (``--objective``; see :func:`ppl_vae.reproduce.authors_objective`).
OBJECTIVES = ("standard", "authors")

#: Where ``full`` runs look for the MNIST IDX files unless told otherwise.
DEFAULT_MNIST_DIR = "data/mnist"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Parsed options of one analysis run.

    Attributes
    ----------
    scale
        ``'tiny'``, ``'quick'`` or ``'full'``.
    out
        Results root; the experiment writes under ``out / <experiment name>``.
    seed
        First seed: data splits and held-out subsets use it; replicate ``k``
        of every configuration trains from seed ``seed + k``.
    n_seeds
        Replicates per configuration (every trend is judged on their mean and
        spread). None: the scale's default, :data:`DEFAULT_SEEDS`.
    device
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    mnist_dir
        Folder of the MNIST IDX files (``full`` scale only).
    overwrite
        Reuse a non-empty experiment directory.
    max_steps
        Cap on the SVI steps of every training run (None: the scale's own).
        Only the test suite sets it, to run the full-scale plumbing end to
        end on a small fixture; results under a cap are not findings.
    max_draws
        Cap on the diagnostics' sample counts (importance samples, posterior
        and predictive draws, KL samples, shown rows; None: the scale's own).
        Only the test suite sets it, beside ``max_steps``: full mode's 1,000
        importance samples and 100 predictive draws of 784 pixels per run
        cost minutes on a CPU, and the test checks the plumbing, not them.
    objective
        ``'standard'`` (the beta-ELBO, the default) or ``'authors'``: the
        non-linear (ReLU MLP / CNN) experiments train the authors' ReLU-script
        objective, ||y - mu||^2 / eta_dec^2 + beta KL with a gradient-norm clip
        of 0.01, i.e. twice the standard negative ELBO at a KL weight of beta / 2
        (:func:`ppl_vae.reproduce.authors_objective`). Linear experiments always
        train the standard beta-ELBO (the authors' linear scripts do).
    """

    scale: str
    out: Path
    seed: int = 0
    device: str = "auto"
    mnist_dir: Path = Path(DEFAULT_MNIST_DIR)
    overwrite: bool = False
    n_seeds: int | None = None
    max_steps: int | None = None
    max_draws: int | None = None
    objective: str = "standard"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(map(repr, SCALES))}, got {self.scale!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.n_seeds is None:
            object.__setattr__(self, "n_seeds", DEFAULT_SEEDS[self.scale])
        if not isinstance(self.n_seeds, int) or self.n_seeds < 1:
            raise ValueError(f"n_seeds must be an integer >= 1, got {self.n_seeds!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be an integer >= 1 or None, got {self.max_steps!r}")
        if self.max_draws is not None and (not isinstance(self.max_draws, int) or self.max_draws < 1):
            raise ValueError(f"max_draws must be an integer >= 1 or None, got {self.max_draws!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}, got {self.objective!r}")
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "mnist_dir", Path(self.mnist_dir))

    @property
    def seeds(self) -> list[int]:
        """The replicate seeds, ``seed, seed + 1, ..., seed + n_seeds - 1``."""
        return list(range(self.seed, self.seed + self.n_seeds))

    def pick(self, tiny, quick, full):
        """The value for this scale."""
        return {"tiny": tiny, "quick": quick, "full": full}[self.scale]

    def steps(self, tiny: int, quick: int, full: int) -> int:
        """SVI steps for this scale, capped by ``max_steps``."""
        steps = self.pick(tiny, quick, full)
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def to_argv(self) -> list[str]:
        """Command-line arguments that reproduce these settings (for runpy-style calls)."""
        argv = ["--out", str(self.out), "--seed", str(self.seed), "--seeds", str(self.n_seeds),
                "--device", self.device, "--mnist-dir", str(self.mnist_dir)]
        if self.max_steps is not None:
            argv += ["--max-steps", str(self.max_steps)]
        if self.max_draws is not None:
            argv += ["--max-draws", str(self.max_draws)]
        if self.objective != "standard":
            argv += ["--objective", self.objective]
        if self.scale != "full":
            argv.append(f"--{self.scale}")
        if self.overwrite:
            argv.append("--overwrite")
        return argv


def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The command line every ``analyses/<name>.py`` script accepts."""
    parser = argparse.ArgumentParser(description=description)
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true",
                       help="embedded data (synthetic + 8x8 digits) and short training, CPU friendly")
    scale.add_argument("--tiny", action="store_true", help="a few steps on tiny data (test suite only)")
    parser.add_argument("--out", default="results", help="results root; outputs go to OUT/<experiment>/")
    parser.add_argument("--seed", type=int, default=0, help="first seed (data splits; replicate k uses seed + k)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="replicates per configuration (default: tiny 2, quick 3, full 5)")
    parser.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-draws", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR,
                        help="folder of the MNIST IDX files (full mode; nothing is downloaded)")
    parser.add_argument("--overwrite", action="store_true", help="reuse an existing, non-empty output folder")
    parser.add_argument("--objective", choices=OBJECTIVES, default="standard",
                        help="non-linear experiments: the standard beta-ELBO, or the authors' ReLU-script objective "
                             "(||y - mu||^2 / eta_dec^2 + beta KL, gradient-norm clip 0.01 = twice the -ELBO at "
                             "KL weight beta / 2)")
    return parser


def parse_settings(description: str, argv: Sequence[str] | None = None) -> Settings:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`Settings`."""
    parser = experiment_parser(description)
    args = parser.parse_args(argv)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    try:
        return Settings(scale=scale, out=Path(args.out), seed=args.seed, device=args.device,
                        mnist_dir=Path(args.mnist_dir), overwrite=args.overwrite, n_seeds=args.seeds,
                        max_steps=args.max_steps, max_draws=args.max_draws, objective=args.objective)
    except ValueError as err:  # a usage error: one line and exit status 2, not a traceback
        parser.error(str(err))


#: Torch CPU threads of the compute-bound runs at the quick scale (:func:`image_batch_threads`).
QUICK_THREADS = 2

#: Cores this process may use; None: the machine's. A parallel job gives each worker its share (:func:`use_cores`).
_CORES: int | None = None


def use_cores(count: int) -> None:
    """Limit this process's compute-bound runs to ``count`` cores (a worker of a parallel reproduce job,
    :mod:`ppl_vae.reproduce.workers`, whose other cores run other experiments)."""
    global _CORES
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    _CORES = count


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_cores() -> int:
    """The cores this process's runs may use: its share of a parallel job, else the machine's."""
    return _CORES or machine_cores()


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def compute_threads(settings: Settings) -> Iterator[None]:
    """One torch CPU thread at the tiny and quick scales, restored afterwards.

    The quick models are small (tens of units, batches of a hundred rows):
    intra-op parallelism gains nothing on them, and costs: two threads made
    the synthetic theorem checks slower (over 5 min against 304 s), and on a
    busy machine the threads spin against each other. Full runs keep torch's
    default. The few compute-bound runs ask for more with
    :func:`image_batch_threads`.
    """
    with _threads(torch.get_num_threads() if settings.scale == "full" else 1):
        yield


@contextlib.contextmanager
def image_batch_threads(settings: Settings) -> Iterator[None]:
    """Up to :data:`QUICK_THREADS` threads at the quick scale, for full-batch runs on all the images.

    Those are compute bound (K linear models times every image per step): on
    the idle 2-core machine two threads make them 1.6x faster (31.7 -> 19.8
    ms per step, 18 linear CVAEs on the digits quadrants). Tiny keeps one
    thread (the test suite runs two workers), full keeps its own. A worker of a
    parallel job takes no more than its share of the cores (:func:`available_cores`).
    """
    if settings.scale != "quick":
        yield
        return
    with _threads(min(QUICK_THREADS, available_cores())):
        yield


def run_script(doc: str, run: Callable[[Settings], Any], argv: Sequence[str] | None = None) -> Any:
    """An analysis script's ``main``: parse ``argv`` (described by the docstring's first line), then
    ``run(settings)`` under :func:`compute_threads` and a convergence ledger (:mod:`ppl_vae.reproduce.gate`)."""
    from ppl_vae.reproduce.gate import ledger

    settings = parse_settings(doc.splitlines()[0], argv)
    with compute_threads(settings), ledger():  # the convergence gate reads the runs trained in here
        return run(settings)
