"""The command line timed as a user meets it: cold processes, files written, one thread each side.

- :func:`cold_rows` (section ``cold``): ``ppl-vae --help``; the bench's 16-configuration
  digits MLP CVAE grid run by ``ppl-vae sweep`` (training, held-out diagnostics, every
  run directory, the task stores and ``combined.nc``) against
  ``python -m ppl_vae.bench.plain_grid`` (plain PyTorch and a ``DataLoader``, one
  configuration at a time, a checkpoint each, no diagnostics: the paper's way); and the
  same sweep with ``--epochs 1``, the fixed cost every sweep pays.
- :func:`threads_rows` (section ``threads``): one ``ppl-vae train`` with ``--threads 1``
  and with torch's default (one thread per core) while busy loops keep all but one core
  occupied, the situation of a shared machine.

Each figure is a whole process, from its start to its exit (``wall_s``); the note gives
its CPU time too (user + system), which load on the machine disturbs less.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ppl_vae._allocator import allocator_environment

#: The grid of the README's figure, as a user types it (``--out`` and ``--epochs`` are added).
SWEEP_ARGS = ("sweep", "--model", "cvae", "--arch", "mlp", "--data", "digits", "--beta", "0.1,0.5,1,2",
              "--eta-dec", "0.5,1", "--seeds", "0,1", "--batch-size", "128", "--latent-dim", "16",
              "--hidden", "128", "--threads", "1", "--quiet")
#: The same grid for the plain script (its defaults are this grid).
PLAIN_ARGS = ("--threads", "1")
#: The training run of the threads section.
TRAIN_ARGS = ("train", "--model", "cvae", "--arch", "mlp", "--data", "digits", "--epochs", "5",
              "--batch-size", "128")


def ppl_vae_command(*args: str) -> list[str]:
    """``ppl-vae ARGS`` with this interpreter (what the console script runs)."""
    return [sys.executable, "-m", "ppl_vae.cli", *args]


def plain_command(*args: str) -> list[str]:
    """The plain PyTorch grid script with ``ARGS``."""
    return [sys.executable, "-m", "ppl_vae.bench.plain_grid", *args]


def child_environment() -> dict[str, str]:
    """This environment with this ``ppl_vae``'s folder first on ``PYTHONPATH``: the children run this code."""
    import ppl_vae

    root = str(Path(ppl_vae.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def compile_bytecode() -> None:
    """Compile this ``ppl_vae``'s modules to bytecode once, as ``pip install`` does for an installed package.

    A checkout installed in editable mode has no ``__pycache__`` until Python
    writes one, and an environment with ``PYTHONDONTWRITEBYTECODE`` set never
    writes one: every cold process would then compile the package from source
    (about 0.2-0.4 s for a sweep), a cost no user of an installed package pays.
    Both sides of the grid get it (the plain script is a module of this package).
    """
    import compileall

    import ppl_vae

    compileall.compile_dir(Path(ppl_vae.__file__).resolve().parent, quiet=1)


def timed_process(argv: Sequence[str], extra_env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process run to its end; its output is kept only if it fails.

    ``extra_env`` is added to its environment. The process starts in an empty temporary folder (``python -m`` puts the
    working folder first on the path: another checkout there must not be run).

    Raises
    ------
    RuntimeError
        The process exited with a non-zero status (its output's tail is in the message).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppl-vae-cwd-") as cwd:
        done = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                              env={**child_environment(), **(extra_env or {})})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {done.stdout[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def _row(section: str, case: str, variant: str, wall: float, note: str, ratio: float = math.nan) -> dict:
    return {"section": section, "case": case, "variant": variant, "steps_per_s": math.nan,
            "samples_per_s": math.nan, "ratio_to_plain": ratio, "wall_s": wall, "peak_host_mb": math.nan,
            "peak_device_mb": math.nan, "note": note}


def cold_rows(*, epochs: int = 50, repeats: int = 1, log: Callable[[str], None]) -> list[dict]:
    """``ppl-vae --help``, the grid from the command line against the plain script, and the fixed cost.

    The two sides of the grid alternate, ``repeats`` times each (medians), in a
    fresh temporary folder each time (``ppl-vae sweep`` starts from nothing).
    """
    compile_bytecode()
    help_runs = [timed_process(ppl_vae_command("--help")) for _ in range(max(3, repeats))]
    ours, theirs, theirs_kept, fixed = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="ppl-vae-bench-") as tmp:
        for k in range(repeats):
            theirs.append(timed_process(plain_command(*PLAIN_ARGS, "--epochs", str(epochs),
                                                      "--out", f"{tmp}/plain{k}")))
            # the allocator setting ppl-vae gives itself, given to the plain script too (a fairness check)
            theirs_kept.append(timed_process(plain_command(*PLAIN_ARGS, "--epochs", str(epochs),
                                                           "--out", f"{tmp}/plain_kept{k}"), allocator_environment()))
            ours.append(timed_process(ppl_vae_command(*SWEEP_ARGS, "--epochs", str(epochs),
                                                      "--out", f"{tmp}/sweep{k}")))
            fixed.append(timed_process(ppl_vae_command(*SWEEP_ARGS, "--epochs", "1", "--out", f"{tmp}/one{k}")))
    (help_wall, help_cpu), (our_wall, our_cpu), (their_wall, their_cpu) = map(_median, (help_runs, ours, theirs))
    fixed_wall, fixed_cpu = _median(fixed)
    kept_wall, kept_cpu = _median(theirs_kept)
    case = f"digits/cvae-mlp/b128/K16/{epochs}ep"
    log(f"  cold: ppl-vae sweep {our_wall:.1f} s (cpu {our_cpu:.1f} s), plain script {their_wall:.1f} s "
        f"(cpu {their_cpu:.1f} s): {their_wall / our_wall:.2f}x ({kept_wall:.1f} s with freed memory kept: "
        f"{kept_wall / our_wall:.2f}x); --epochs 1 sweep {fixed_wall:.1f} s; "
        f"--help {help_wall:.2f} s")
    return [
        _row("cold", "ppl-vae --help", "ppl-vae", help_wall, f"whole process; cpu {help_cpu:.2f} s"),
        _row("cold", case, "ppl-vae sweep", our_wall,
             f"whole process: training, held-out diagnostics, run directories, stores, combined.nc; cpu "
             f"{our_cpu:.1f} s; {their_wall / our_wall:.2f}x faster than the plain script "
             f"({their_cpu / our_cpu:.2f}x in cpu)", our_wall / their_wall),
        _row("cold", case, "plain_script", their_wall,
             f"python -m ppl_vae.bench.plain_grid: one configuration at a time, DataLoader, a checkpoint each, "
             f"no diagnostics; cpu {their_cpu:.1f} s", 1.0),
        _row("cold", case, "plain_script, freed memory kept", kept_wall,
             f"the same with glibc keeping freed memory as ppl-vae has it (MALLOC_MMAP_THRESHOLD_, "
             f"MALLOC_TRIM_THRESHOLD_); cpu {kept_cpu:.1f} s; ours is {kept_wall / our_wall:.2f}x faster",
             our_wall / kept_wall),
        _row("cold", "digits/cvae-mlp/b128/K16/1ep", "ppl-vae sweep", fixed_wall,
             f"the fixed cost: --epochs 1, whole process; cpu {fixed_cpu:.1f} s"),
    ]


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU for the duration (a loaded machine), stopped afterwards."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def threads_rows(*, repeats: int = 1, log: Callable[[str], None]) -> list[dict]:
    """One ``ppl-vae train`` with one thread and with torch's default, all other cores kept busy."""
    cores = os.cpu_count() or 1
    runs: dict[str, list[tuple[float, float]]] = {"1": [], "0": []}
    with tempfile.TemporaryDirectory(prefix="ppl-vae-bench-") as tmp, busy_cores(max(cores - 1, 1)):
        for k in range(repeats):
            for threads in runs:
                out = Path(tmp) / f"threads{threads}_{k}"
                runs[threads].append(timed_process(ppl_vae_command(*TRAIN_ARGS, "--threads", threads,
                                                                   "--out", str(out))))
    (one_wall, one_cpu), (all_wall, all_cpu) = _median(runs["1"]), _median(runs["0"])
    case = f"digits/cvae-mlp/b128/5ep, {max(cores - 1, 1)} of {cores} cores busy"
    log(f"  threads: ppl-vae train --threads 1 {one_wall:.1f} s, torch's default ({cores}) {all_wall:.1f} s")
    return [_row("threads", case, "threads=1", one_wall, f"whole process; cpu {one_cpu:.1f} s",
                 one_wall / all_wall),
            _row("threads", case, f"threads=default({cores})", all_wall, f"whole process; cpu {all_cpu:.1f} s", 1.0)]
