"""Where independent tasks run: in this process, in a pool of local processes, or on a Ray cluster.

``run_tasks(fn, tasks, settings)`` calls ``fn(task)`` for every task and yields ``(index,
result)`` as each finishes, in the order they finish. ``fn`` must be a module-level function
(it is sent to other processes by name) and a pure function of its task: the study's cells and
reproduce's spread runs are. Each task runs with ``settings.threads`` intra-op threads whichever
executor runs it, so results are the same, bit for bit, across executors (the thread count is
part of the computation: see docs/reliability.md).

Failures: an exception ``fn`` raises is the task's answer, raised here (the other workers are
stopped). A worker that dies under a task (killed, out of memory) costs that task one more try
on a fresh worker; if it dies again the task is yielded as ``Lost`` and the others go on.
"""

import collections
import dataclasses
import importlib
import multiprocessing
import multiprocessing.connection
import pickle
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import torch

from hookedmlp.checks import check_choice, check_int
from hookedmlp.cores import allowed_cores
from hookedmlp.errors import ClusterError, MissingExtraError, UsageError
from hookedmlp.train import threads as thread_count

__all__ = ["EXECUTORS", "ExecutorSettings", "Lost", "run_tasks"]

EXECUTORS = ("serial", "process", "ray")
REACH_SECONDS = 5.0  # how long to try a Ray address before saying it cannot be reached


@dataclasses.dataclass(frozen=True)
class Lost:
    """A task whose worker died on every try: why, in words."""

    why: str


@dataclasses.dataclass(frozen=True)
class ExecutorSettings:
    """How to run tasks: ``kind`` (serial, process, ray), ``workers`` (local processes, or a local Ray
    instance's CPUs; ``None``: this machine's cores), ``address`` (an existing Ray cluster, ``auto`` for the one
    this machine is part of), ``threads`` per task, and ``retries`` after a worker dies."""

    kind: str = "serial"
    workers: Optional[int] = None
    address: Optional[str] = None
    threads: int = 1
    retries: int = 1

    def __post_init__(self) -> None:
        check_choice(self.kind, EXECUTORS, "executor")
        if self.workers is not None:
            check_int(self.workers, "workers", low=1)
            if self.kind == "serial":
                raise UsageError("workers applies to the process and ray executors; serial runs one task at a time")
        if self.address is not None:
            if self.kind != "ray":
                raise UsageError(f"a Ray address applies to the ray executor, not {self.kind}")
            if self.workers is not None:
                raise UsageError("workers sizes a local Ray instance; a cluster at an address has its own size")
        check_int(self.threads, "threads", low=1)
        check_int(self.retries, "retries", low=0)

    @property
    def slots(self) -> Optional[int]:
        """How many tasks run at once: 1 (serial), the local workers, or None (a cluster's size is not known here)."""
        if self.kind == "serial":
            return 1
        return None if self.address is not None else self.workers or allowed_cores()

    @property
    def label(self) -> str:
        where = f" at {self.address}" if self.address else f", {self.slots} workers"
        return f"{self.kind}{'' if self.kind == 'serial' else where}, {self.threads} thread(s) per task"


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], settings: ExecutorSettings) -> Iterator[tuple[int, Any]]:
    """``(index, fn(tasks[index]))`` for every task as it finishes (``Lost`` for one whose worker kept dying)."""
    if not tasks:
        return iter(())
    if settings.kind == "serial":
        return _serial(fn, tasks, settings)
    if settings.kind == "process":
        return _processes(fn, tasks, settings)
    return _ray(fn, tasks, settings)


def _serial(fn: Callable[[Any], Any], tasks: Sequence[Any], settings: ExecutorSettings) -> Iterator[tuple[int, Any]]:
    for i, task in enumerate(tasks):
        with thread_count(settings.threads):
            result = fn(task)
        yield i, result


# -- local processes ------------------------------------------------------------------------------


def _answer(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (to travel back to the coordinator), else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def _worker(conn: Any, fn: Callable[[Any], Any], threads: int) -> None:
    """A pool process: run each task it is sent, send back its result or its exception; ``None`` ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle: it stops the workers
    torch.set_num_threads(threads)
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            conn.send(("ok", fn(task)))
        except Exception as e:
            conn.send(("error", _answer(e)))


def _processes(fn: Callable[[Any], Any], tasks: Sequence[Any], settings: ExecutorSettings) -> Iterator[tuple[int, Any]]:
    """One task at a time per worker process, so that a worker's death names its task."""
    ctx = multiprocessing.get_context("spawn")  # not fork: a forked torch can hang on its threads' locks
    todo = collections.deque(range(len(tasks)))
    tries = [0] * len(tasks)
    live: dict[Any, list[Any]] = {}  # pipe -> [process, task index or None]

    def start() -> Any:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, fn, settings.threads), daemon=True)
        proc.start()
        child.close()
        live[parent] = [proc, None]
        return parent

    def feed(conn: Any) -> None:
        if todo:
            i = todo.popleft()
            tries[i] += 1
            live[conn][1] = i
            conn.send(tasks[i])

    for _ in range(min(settings.workers or allowed_cores(), len(tasks))):
        feed(start())
    left = len(tasks)
    try:
        while left:
            sentinels = {proc.sentinel: conn for conn, (proc, _) in live.items()}
            for ready in multiprocessing.connection.wait([*live, *sentinels]):
                conn = sentinels.get(ready, ready)
                if conn not in live:
                    continue  # its death was handled with its pipe
                proc, i = live[conn]
                try:
                    status, value = conn.recv() if ready is conn else ("died", None)
                except (EOFError, OSError):
                    status = "died"
                if status == "died":
                    proc.join(timeout=5)
                    del live[conn]
                    conn.close()
                    if i is not None and tries[i] <= settings.retries:
                        todo.appendleft(i)
                    elif i is not None:
                        left -= 1
                        yield i, Lost(f"its worker died on each of {tries[i]} tries (exit code {proc.exitcode})")
                    if todo:
                        feed(start())
                    continue
                live[conn][1] = None
                if status == "error":
                    raise value
                left -= 1
                yield i, value
                feed(conn)
    finally:
        for conn, (proc, _) in live.items():
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=1)
            if proc.is_alive():
                proc.terminate()
                proc.join()


# -- Ray ----------------------------------------------------------------------------------------


def _ray_module() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise MissingExtraError(
            'the ray executor needs Ray, an optional extra: pip install -e ".[ray]" (or pip install "hookedmlp[ray]")'
        ) from None


def check_reachable(address: str, timeout: float = REACH_SECONDS) -> None:
    """``ClusterError`` unless something listens at ``address`` (``host:port``, ``ray://host:port``) within ``timeout``.

    Where something else answers, ``ray.init`` fails in its own time (about 20 s measured here).
    """
    if address == "auto":
        return  # Ray reads the local cluster's address from its session files, or says at once there is none
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        why = "not host:port" if isinstance(e, ValueError) else (e.strerror or type(e).__name__)
        raise ClusterError(
            f"cannot reach a Ray cluster at {address!r} within {timeout:g} s ({why}); check the address, or start a "
            "cluster there (ray start --head)"
        ) from None


def _ray_task(fn: Callable[[Any], Any], threads: int, task: Any) -> Any:
    torch.set_num_threads(threads)
    return fn(task)


def _ray(fn: Callable[[Any], Any], tasks: Sequence[Any], settings: ExecutorSettings) -> Iterator[tuple[int, Any]]:
    ray = _ray_module()
    started = not ray.is_initialized()
    if started and settings.address is not None:
        check_reachable(settings.address)
        try:
            ray.init(address=settings.address, log_to_driver=False)
        except ConnectionError as e:
            raise ClusterError(f"cannot join the Ray cluster at {settings.address!r}: {e}") from None
    elif started:
        ray.init(num_cpus=settings.workers or allowed_cores(), include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=settings.threads, max_retries=settings.retries)(_ray_task)
    refs = {remote.remote(fn, settings.threads, task): i for i, task in enumerate(tasks)}
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(done[0])
            try:
                value = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:  # the task's own exception
                raise (getattr(e, "cause", None) or e) from None
            except ray.exceptions.RayError as e:  # its worker or node died on every try
                value = Lost(f"{type(e).__name__} on each of {settings.retries + 1} tries")
            yield i, value
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
