"""A sweep backend on Ray: each task (a group of configurations) is one Ray task.

The same code runs on a laptop and on a cluster; only ``address`` changes:

- ``None``: start a private Ray instance on this machine (stopped afterwards);
- ``'auto'``: join the cluster this machine belongs to (``ray start --head`` / a worker node);
- ``'ray://HOST:10001'``: connect through Ray Client to a remote head node.

If Ray is already initialised in this process (a notebook, a test fixture), it
is used as is and left running. Each task asks Ray for ``num_cpus`` CPUs and
``num_gpus`` GPUs; Ray places it on a node that has them and sets
``CUDA_VISIBLE_DEVICES``, so ``device='auto'`` in a task finds its GPU. The
data set travels once through the object store (``ray.put``), results come back
to the driver, which writes every file: workers need no shared file system.

Ray is an optional dependency (``pip install ppl-vae[ray]``), imported only here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ppl_vae.sweep.backends import SweepTask

INSTALL_HINT = "the Ray backend needs Ray: pip install 'ppl-vae[ray]' (or pip install 'ray[default]')"


def import_ray():
    """The ``ray`` module, or ImportError telling how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return ray


def _call(fn: Callable[[SweepTask, Any], Any], task: SweepTask, bundle: Any) -> Any:
    """Body of every Ray task: the backend-independent task function."""
    return fn(task, bundle)


class RayBackend:
    """Runs sweep tasks as Ray tasks (implements :class:`ppl_vae.sweep.backends.Backend`).

    Parameters
    ----------
    address
        Where the Ray cluster is: None (a fresh local instance), ``'auto'`` or
        ``'ray://HOST:PORT'``; see the module docstring.
    num_cpus, num_gpus
        Resources one task requests (fractions allowed, e.g. ``num_gpus=0.25``
        to pack four tasks on a GPU).
    max_retries
        Times Ray reruns a task whose worker died (0: record it as failed at once;
        exceptions raised by the task itself are never retried).
    init_options
        Extra ``ray.init`` keyword arguments when this backend starts Ray
        (e.g. ``num_cpus``, ``runtime_env``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 0, init_options: dict[str, Any] | None = None):
        if float(num_cpus) < 0 or float(num_gpus) < 0:
            raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus} and {num_gpus}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.num_cpus, self.num_gpus, self.max_retries = num_cpus, num_gpus, int(max_retries)
        self.init_options = dict(init_options or {})
        self._ray = import_ray()

    @contextlib.contextmanager
    def session(self):
        """Ray initialised for the duration; shut down after only if this backend started it."""
        ray = self._ray
        started = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": True, **self.init_options}
            # 'local' forces a fresh instance even if a cluster runs on this machine
            ray.init(address=self.address or "local", **options)
            started = True
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()

    def as_completed(self, fn: Callable[[SweepTask, Any], Any], tasks: Sequence[SweepTask], bundle: Any
                     ) -> Iterator[tuple[int, Any]]:
        """Submit every task; yield ``(position, result)`` as each ends, ``result`` an exception if it failed.

        A task that raised comes back as a ``ray.exceptions.RayTaskError`` (its
        ``cause`` the original exception); a killed worker as a
        ``ray.exceptions.WorkerCrashedError`` (after ``max_retries`` reruns).
        """
        if not tasks:
            return
        with self.session() as ray:
            remote = ray.remote(_call).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                               max_retries=self.max_retries, retry_exceptions=False)
            bundle_ref = ray.put(bundle)
            pending = {remote.remote(fn, task, bundle_ref): position for position, task in enumerate(tasks)}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    position = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - handed to the caller, who records it
                        result = err
                    yield position, result

    def map(self, fn: Callable[[SweepTask, Any], Any], tasks: Sequence[SweepTask], bundle: Any) -> list[Any]:
        """Results in task order (the :class:`~ppl_vae.sweep.backends.Backend` protocol); raises the first failure."""
        results: list[Any] = [None] * len(tasks)
        for position, result in self.as_completed(fn, tasks, bundle):
            if isinstance(result, BaseException):
                raise result
            results[position] = result
        return results
