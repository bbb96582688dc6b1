"""Experiments of a reproduce job side by side, each in a process of its own.

The quick experiments are small models trained on one CPU thread each, so one
experiment keeps one core busy: on a machine with several cores the job runs
``jobs`` of them at once. Each runs in a fresh (spawned) interpreter that gets
``threads`` torch threads, so

- an experiment's numbers do not depend on which experiments ran before it in
  the same process, nor on how many run beside it (only on its thread count,
  as on a machine with that many cores);
- one experiment that crashes its process (a segfault, the memory killer) is a
  failed entry of the summary; the others go on.

The longest experiments start first (:func:`expected_steps`, the sequential
SVI steps each script's ``plan`` declares), so that the job does not end with
one long experiment running alone while the other cores idle.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable, Sequence
from pathlib import Path

from ppl_vae.reproduce.settings import Settings, machine_cores


def default_jobs(settings: Settings) -> int:
    """Experiments run at once by default: one per core at the tiny and quick scales, one at the full scale
    (whose runs are meant for one GPU, and each uses every CPU thread it is given)."""
    return 1 if settings.scale == "full" else machine_cores()


def expected_steps(settings: Settings, names: Sequence[str], analyses_dir: str | Path) -> dict[str, float]:
    """Each experiment's sequential SVI steps from its declared plan (:mod:`ppl_vae.reproduce.plan`); infinity
    for a script that declares none, so that an experiment of unknown cost starts first."""
    from ppl_vae.reproduce.plan import plan_experiments

    plans = plan_experiments(settings, names, analyses_dir)
    return {name: float("inf") if groups is None else float(sum(g.sequential_steps for g in groups))
            for name, groups in plans.items()}


def _child(conn, run: Callable, name: str, settings: Settings, analyses_dir: Path, threads: int) -> None:
    """A worker's body: ``threads`` torch threads, then ``run(name, settings, analyses_dir)`` sent back."""
    import gc

    import torch

    from ppl_vae._allocator import keep_freed_memory
    from ppl_vae.reproduce import settings as settings_module

    keep_freed_memory()  # as the command line that started it
    torch.set_num_threads(threads)
    settings_module.use_cores(threads)
    conn.send(run(name, settings, analyses_dir))
    conn.close()
    gc.freeze()  # the process ends here: its exit need not traverse every object (see ppl_vae.cli.run)


def run_in_workers(run: Callable, names: Sequence[str], settings: Settings, analyses_dir: Path, *, jobs: int,
                   threads: int, crashed: Callable[[str, str], object],
                   done: Callable[[object], None] | None = None,
                   running_now: Callable[[list[str]], None] | None = None) -> dict[str, object]:
    """``run(name, settings, analyses_dir)`` for every name, at most ``jobs`` at once, each in its own process.

    Parameters
    ----------
    run
        A module-level function (a spawned process imports it by name) returning a picklable outcome;
        it must turn the experiment's own exceptions into an outcome.
    names
        Experiments in the order they start (longest first).
    settings, analyses_dir
        Passed to ``run``.
    jobs
        Processes at once (>= 1).
    threads
        Torch CPU threads of each process.
    crashed
        ``crashed(name, reason)``: the outcome of an experiment whose process died without sending one.
    done
        Called with each outcome as it arrives (progress).
    running_now
        Called with the names running after each round of starts (progress).

    Returns
    -------
    dict
        name -> outcome, for every name.
    """
    context = multiprocessing.get_context("spawn")  # a fork of a process holding torch's threads is unsafe
    waiting = list(names)
    running: dict[object, tuple[str, object, multiprocessing.connection.Connection]] = {}
    outcomes: dict[str, object] = {}

    def finish(name: str, outcome) -> None:
        outcomes[name] = outcome
        if done is not None:
            done(outcome)

    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(send, run, name, settings, analyses_dir, threads),
                                          name=f"ppl-vae {name}", daemon=True)
                process.start()
                send.close()  # the child holds the only write end: its death ends the pipe
                running[process.sentinel] = (name, process, receive)
            if running_now is not None:
                running_now([name for name, _, _ in running.values()])
            # A child may block in send() until its outcome is read: wait on both its pipe and its exit.
            ready = multiprocessing.connection.wait([*running, *(r for _, _, r in running.values())])
            for sentinel in list(running):
                name, process, receive = running[sentinel]
                if receive not in ready and sentinel not in ready:
                    continue
                try:
                    outcome = receive.recv()
                except EOFError:  # it died before sending
                    outcome = None
                process.join()
                if outcome is None:
                    outcome = crashed(name, f"its worker process died (exit code {process.exitcode})")
                receive.close()
                del running[sentinel]
                finish(name, outcome)
    finally:  # interrupted (Ctrl-C) or failing: no worker outlives the job
        for _, process, receive in running.values():
            process.terminate()
            process.join()
            receive.close()
    return outcomes
