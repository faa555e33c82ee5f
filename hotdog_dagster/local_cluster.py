"""The Celery deployment of ``deploy/celery`` on one machine: PostgreSQL, Redis, Celery workers, the daemon.

For the distributed test, ``bench/scale.py``, and trying the deployment before a cluster. The servers are
the system's own packages (``scripts/setup.sh`` installs them); each starts on a free loopback port with
its own data directory under ``root``. Every process gets a marker in its environment, so stopping finds
them all (also what they started) and nothing outlives the cluster, also when a test fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hotdog_dagster.core.settings import Profile

MARKER = "HOTDOG_LOCAL_CLUSTER"
#: What a missing server is called in the message, and which package provides it.
PACKAGES = {"postgres": "postgresql", "initdb": "postgresql", "redis-server": "redis-server"}


class ServerUnavailable(RuntimeError):
    """A server binary is missing or cannot start here; the message says which and how to install it."""


def find_binary(name: str) -> str | None:
    """``name`` on the PATH, or in Debian's ``/usr/lib/postgresql/<version>/bin`` (not on the PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


def missing_servers() -> list[str]:
    """The Debian packages whose servers are not installed (empty when the cluster can start)."""
    return sorted({PACKAGES[b] for b in ("postgres", "initdb", "redis-server") if find_binary(b) is None})


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: then it runs as the ``postgres`` user the package creates."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(
            "PostgreSQL will not run as root and there is no 'postgres' user; install the postgresql package "
            "(scripts/setup.sh) or run as a non-root user"
        ) from None


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``ready`` until it holds; fail with the server's log when it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(f"{what} exited with code {proc.returncode}:\n{_tail(log)}")
        try:
            if ready():
                return
        except Exception:  # not accepting connections yet
            pass
        time.sleep(0.2)
    raise ServerUnavailable(f"{what} did not become ready in {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``MARKER=marker`` (children included)."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat", "rb") as s:
                        if s.read().split(b") ")[-1][:1] != b"Z":  # zombies are gone already
                            pids.append(int(entry))
        except OSError:
            continue
    return pids


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM


@dataclass
class LocalCluster:
    """Start with ``with LocalCluster(root, profile, dagster_yaml) as cluster:``; everything stops on exit.

    ``dagster_yaml`` is the deployment's instance file (``deploy/celery/dagster.yaml``), whose PostgreSQL
    settings come from ``DAGSTER_PG_*`` variables this class sets; the workers' ``-y`` file is written
    from the profile's ``scale`` section, so executor and workers agree on the broker.
    """

    root: Path
    profile: Profile
    dagster_yaml: Path
    startup_timeout: float = 120.0
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    services: list[Service] = field(default_factory=list)
    pg_port: int = 0
    redis_port: int = 0
    _pg_dir: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        try:
            self.start_servers()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_servers(self) -> None:
        """PostgreSQL and Redis, the instance's ``dagster.yaml`` and the run's profile."""
        missing = missing_servers()
        if missing:
            raise ServerUnavailable(
                f"not installed: {', '.join(missing)}; run scripts/setup.sh (apt-get install {' '.join(missing)})"
            )
        for sub in ("logs", "dagster_home", "hotdog_home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._start_postgres()
        self._start_redis()
        self.profile = self.profile.with_overrides(
            "scale",
            executor="celery",
            celery_broker=f"redis://127.0.0.1:{self.redis_port}/0",
            celery_backend=f"redis://127.0.0.1:{self.redis_port}/1",
        )
        self.profile_path.write_text(yaml.safe_dump(self.profile.model_dump(), sort_keys=False))
        shutil.copy(self.dagster_yaml, self.dagster_home / "dagster.yaml")
        from hotdog_dagster.defs.automation.executors import celery_config

        self.celery_yaml.write_text(yaml.safe_dump({"execution": {"config": celery_config(self.profile.scale)}}))

    def stop(self) -> None:
        """Stop every service (its whole process group), then anything else that carries the marker."""
        for service in reversed(self.services):
            self._stop_group(service)
        self.services.clear()
        for pid in marked_processes(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while marked_processes(self.marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._pg_dir is not None:
            shutil.rmtree(self._pg_dir, ignore_errors=True)
            self._pg_dir = None

    def _stop_group(self, service: Service, grace: float = 20.0) -> None:
        try:
            os.killpg(service.proc.pid, service.stop_signal)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):  # what is left of the group (children, grandchildren)
            os.killpg(service.proc.pid, signal.SIGKILL)
        service.proc.wait()

    # -- places and environment --------------------------------------------------------------------
    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def hotdog_home(self) -> Path:
        return self.root / "hotdog_home"

    @property
    def profile_path(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def celery_yaml(self) -> Path:
        return self.root / "celery.yaml"

    @property
    def postgres_url(self) -> str:
        return f"postgresql://hotdog@127.0.0.1:{self.pg_port}/dagster"

    def env(self) -> dict[str, str]:
        """What every process of the deployment sees: instance, data root, profile, PostgreSQL, the marker."""
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "HOTDOG_HOME": str(self.hotdog_home),
            "HOTDOG_CONFIG": str(self.profile_path),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.pg_port),
            "DAGSTER_PG_USERNAME": "hotdog",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": "dagster",
            MARKER: self.marker,
        }

    def start(self, name: str, args: list[str], stop_signal: int = signal.SIGTERM, **popen: Any) -> Service:
        """Start ``args`` in its own process group with the cluster's environment; output goes to ``logs/``."""
        log = self.root / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=popen.pop("env", self.env()),
                start_new_session=True,
                **popen,
            )
        service = Service(name, proc, log, stop_signal)
        self.services.append(service)
        return service

    # -- servers -----------------------------------------------------------------------------------
    def _start_postgres(self) -> None:
        user = _server_user()
        # Under the system temp dir, not ``root``: the postgres user must reach it, and pytest's tmp is private.
        self._pg_dir = Path(tempfile.mkdtemp(prefix="hotdog-pg-"))
        data = self._pg_dir / "data"
        run_as: dict[str, Any] = {}
        if user is not None:
            os.chown(self._pg_dir, user.pw_uid, user.pw_gid)
            run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {**self.env(), "HOME": str(self._pg_dir)}
        subprocess.run(
            [find_binary("initdb"), "-D", str(data), "-U", "hotdog", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            env=env,
            cwd=self._pg_dir,
            **run_as,
        )
        self.pg_port = free_port()
        args = [find_binary("postgres"), "-D", str(data), "-p", str(self.pg_port), "-k", str(self._pg_dir)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]
        args += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        pg = self.start("postgres", args, stop_signal=signal.SIGINT, env=env, cwd=self._pg_dir, **run_as)

        import psycopg2

        def ready() -> bool:
            psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="hotdog", dbname="postgres").close()
            return True

        _wait("PostgreSQL", ready, pg.proc, pg.log, self.startup_timeout)
        con = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="hotdog", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
        con.close()

    def _start_redis(self) -> None:
        self.redis_port = free_port()
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        args = [find_binary("redis-server"), "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        args += ["--dir", str(data), "--save", "", "--appendonly", "no", "--daemonize", "no"]
        redis_service = self.start("redis", args)

        import redis

        def ready() -> bool:
            return bool(redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=1).ping())

        _wait("Redis", ready, redis_service.proc, redis_service.log, self.startup_timeout)

    # -- Dagster's processes -----------------------------------------------------------------------
    def start_worker(self, name: str, queues: list[str]) -> Service:
        """A Celery worker consuming ``queues`` (``dagster`` is the default queue), one step at a time.

        The solo pool runs steps in the worker process itself, so the code is imported once and the model
        a GPU step loads stays loaded for the next partition's step; its Celery name is ``<name>@<host>``.
        """
        args = [sys.executable, "-m", "dagster_celery.cli", "worker", "start", "-A", "dagster_celery.app"]
        # -i: the worker imports the definitions when it starts, not when its first step arrives
        args += ["-y", str(self.celery_yaml), "-n", name, "-i", "hotdog_dagster.definitions"]
        for q in queues:
            args += ["-q", q]
        args += ["--", "--pool", "solo"]
        service = self.start(f"worker-{name}", args)
        _wait(f"Celery worker {name}", lambda: self.worker_ready(name), service.proc, service.log, self.startup_timeout)
        return service

    def worker_ready(self, name: str) -> bool:
        from celery import Celery

        app = Celery(broker=self.profile.scale.celery_broker)
        try:
            replies = app.control.ping(timeout=1.0)
        finally:
            app.close()
        return any(n.split("@")[0] == name for reply in replies for n in reply)

    def start_daemon(self) -> Service:
        """The Dagster daemon (schedules, sensors, the run queue, backfills) with its own code server."""
        args = [sys.executable, "-m", "dagster._daemon", "run", "-m", "hotdog_dagster.definitions"]
        return self.start("daemon", args)

    def logs(self) -> str:
        """The tail of every service's log, for a failure message."""
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted((self.root / "logs").glob("*.log")))
