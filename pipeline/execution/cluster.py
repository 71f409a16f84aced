"""Where per-shard work runs: in-process, local joblib workers, or a Dask cluster through joblib."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
from typing import Iterator

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.execution.runner import RunError

log = get_logger(__name__)


@contextlib.contextmanager
def backend_for(jobs: int = 1, scheduler: str | None = None, dask_local: int = 0) -> Iterator[str | None]:
    """Yield the joblib backend name to use: ``None`` (local, ``jobs`` processes) or ``"dask"``.

    ``scheduler`` connects to a running Dask scheduler (``tcp://host:8786``); ``dask_local`` starts a
    local cluster of that many single-threaded worker processes on loopback for the duration.
    """
    if not scheduler and not dask_local:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "--scheduler/--dask-local need the Dask extra, which is not installed: pip install 'mpview[dask]'"
        ) from None
    with _dask_chatter_hidden():
        if scheduler:
            with _connect(Client, scheduler) as client:
                log.info(
                    "running on Dask scheduler %s (%d workers)", scheduler, len(client.scheduler_info()["workers"])
                )
                check_worker_versions(client)
                yield "dask"
            return
        with (
            LocalCluster(
                n_workers=dask_local, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            log.info("started a local Dask cluster with %d workers at %s", dask_local, cluster.scheduler_address)
            yield "dask"


class ClusterError(RunError):
    """The Dask cluster cannot serve this run (unreachable, or workers with other package versions)."""

    code = "cluster"


def _connect(client_class: type, address: str, timeout: float = 20.0):
    """A client of the scheduler at ``address``; a one-line ``ClusterError`` when it cannot be reached."""
    _refuse_dead_address(address)
    try:
        return client_class(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:.0f} s "
            f"({type(exc).__name__}: {' '.join(str(exc).split()) or 'no answer'})"
        ) from None


def _refuse_dead_address(address: str) -> None:
    """Fail at once, not after the client's timeout, when the address's host does not resolve or nothing listens on
    its port (a mistyped address); any other answer, or none, is left to the client and its timeout."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location) if scheme == "tcp" else (None, None)
    except ValueError:
        return  # no port, or a malformed one: the client names it
    if not host:
        return
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return
    except ConnectionRefusedError:
        reason = f"nothing listens on port {port} of {host} (connection refused)"
    except socket.gaierror as exc:
        reason = f"host {host!r} does not resolve ({exc.strerror or exc})"
    except OSError:
        return  # no answer yet (a slow network, a firewall): the client waits its timeout
    raise ClusterError(f"cannot reach the Dask scheduler at {address}: {reason}")


def check_worker_versions(client) -> None:
    """Refuse workers whose package versions differ from this process's (byte-identical output depends on them)."""
    from pipeline.execution.provenance import package_versions

    mine = package_versions()
    for worker, theirs in client.run(package_versions).items():
        different = sorted(name for name in set(mine) | set(theirs) if mine.get(name) != theirs.get(name))
        if different:
            details = ", ".join(
                f"{name} {theirs.get(name, 'missing')} (here {mine.get(name, 'missing')})" for name in different
            )
            raise ClusterError(
                f"Dask worker {worker} runs other package versions: {details}; install the same "
                "versions on every worker"
            )


@contextlib.contextmanager
def _dask_chatter_hidden() -> Iterator[None]:
    """Show Dask's own INFO logging (scheduler, nanny, connections) only under ``--verbose``; warnings always."""
    dask_logger = logging.getLogger("distributed")
    old = dask_logger.level
    if log.getEffectiveLevel() > logging.DEBUG:
        dask_logger.setLevel(logging.WARNING)
    client_logger, noise = logging.getLogger("distributed.client"), _ConnectionNoise()
    client_logger.addFilter(noise)  # a lost scheduler is reported once, by the runner
    try:
        yield
    finally:
        dask_logger.setLevel(old)
        client_logger.removeFilter(noise)


class _ConnectionNoise(logging.Filter):
    """Drops the Dask client's own reports of a lost connection (the tracebacks of its reconnect attempts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        lost = isinstance(error, (OSError, asyncio.CancelledError, concurrent.futures.CancelledError))
        return not (lost or "reconnect" in record.getMessage().lower())
