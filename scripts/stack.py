#!/usr/bin/env python3
"""Run tokentide's local stack: Kafka, PostgreSQL and the five tokentide services
(ingest, streams, sink, dashboard, notify).

    python3 scripts/stack.py up [--infra]  start what is not running yet
                                           (--infra: only Kafka and PostgreSQL)
    python3 scripts/stack.py down          stop what `up` (or `run`) started
    python3 scripts/stack.py status        one line per component
    python3 scripts/stack.py env           export lines for KAFKA_BOOTSTRAP and
                                           DATABASE_URL, for `eval`
    python3 scripts/stack.py run [--timescale] -- CMD
                                           run CMD with the infra up, then stop
                                           what this call started (`make test`)

Standard library only: runs with any python3 (3.9+), before or after the venv exists.
System packages (JDK 17+, Maven, PostgreSQL server, runuser) come from
scripts/install-system-deps.sh.

TimescaleDB, when this machine has it (find_timescaledb(): TIMESCALEDB_SOURCE, a source
tarball that scripts/install-timescaledb.sh builds once into .local/timescaledb; else the
system PostgreSQL's timescaledb package; else a copy built earlier): `up` runs its
PostgreSQL with the extension preloaded, so `tokentide migrate` lays the database out as
TimescaleDB, and says which layout the database has. `run --timescale` keeps the
PostgreSQL of DATABASE_URL plain (the system's binaries, no extension) and starts a second
cluster with TimescaleDB for the suite's TimescaleDB leg (TIMESCALE_DATABASE_URL); without
TimescaleDB that leg cannot run, which is an error under CI=true.

All runtime state lives under <repo>/.local/ (TOKENTIDE_STACK_DIR, read at import,
moves it elsewhere; the Kafka jars stay cached in <repo>/.local/kafka/libs):
    kafka/libs       broker jars, fetched once by Maven (scripts/kafka/pom.xml)
    kafka/data       KRaft log dir (plus kafka/cluster.id, kafka/server.properties,
                     kafka/logs/server.log)
    pg/data, pg/run  PostgreSQL cluster and its unix socket directory
    pg-timescale/    the TimescaleDB leg's cluster (data, run), `run --timescale` only
    timescaledb/     PostgreSQL copy with TimescaleDB built from TIMESCALEDB_SOURCE
    run/<name>.pid   pid of each component this script started
    log/<name>.log   stdout and stderr of each component
    streams/         TOKENTIDE_DATA_DIR of the services unless set

With KAFKA_BOOTSTRAP set no broker is started (that address must accept TCP); with
DATABASE_URL (TIMESCALE_DATABASE_URL) set no PostgreSQL (with TimescaleDB) is started
(that server must answer). The local ones listen on 127.0.0.1, ports
TOKENTIDE_KAFKA_PORT (default 9092; the KRaft controller takes the next port),
TOKENTIDE_PG_PORT (default 5432) and TOKENTIDE_TIMESCALE_PG_PORT (default 5433). The
services listen on the ports their own settings name (TOKENTIDE_INGEST_PORT 4318,
TOKENTIDE_GRPC_PORT 4317, TOKENTIDE_STREAMS_PORT 6066, TOKENTIDE_SINK_PORT 9464,
TOKENTIDE_DASHBOARD_PORT 8000, TOKENTIDE_NOTIFY_PORT 9465), so a second stack beside the
first needs those, TOKENTIDE_STACK_DIR, and (on a shared broker and server) its own
TOKENTIDE_TOPIC_PREFIX, consumer groups and database.

Importable: start_infra(), start_services(), stop_started(), stop_all(),
status_lines(), env_lines(), find_timescaledb(). Failures raise StackError, whose
message says what to do; main() prints it and returns 1.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "3.9.1"  # keep in step with scripts/kafka/pom.xml

REPO = Path(__file__).resolve().parent.parent
KAFKA_POM = REPO / "scripts" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO / "scripts" / "kafka" / "log4j.properties"
TOKENTIDE_BIN = REPO / ".venv" / "bin" / "tokentide"

LOCAL = Path(os.environ.get("TOKENTIDE_STACK_DIR") or REPO / ".local").resolve()
KAFKA_DIR = LOCAL / "kafka"
# A cache shared by every stack directory: the jars are the same for all.
KAFKA_LIBS = REPO / ".local" / "kafka" / "libs"
KAFKA_DATA = KAFKA_DIR / "data"
KAFKA_LOGS = KAFKA_DIR / "logs"
KAFKA_CLUSTER_ID = KAFKA_DIR / "cluster.id"
KAFKA_CLASSPATH = f"{KAFKA_LIBS}{os.sep}*"
PG_DIR = LOCAL / "pg"
PG_TIMESCALE_DIR = LOCAL / "pg-timescale"
TIMESCALEDB_INSTALLER = REPO / "scripts" / "install-timescaledb.sh"
RUN_DIR = LOCAL / "run"
LOG_DIR = LOCAL / "log"
STREAMS_DATA_DIR = LOCAL / "streams"

START_TIMEOUT_S = 120.0
# KRaft quorum formation can time out on a loaded machine; spring-kafka retries too.
KAFKA_START_ATTEMPTS = 3
SERVICE_STOP_TIMEOUT_S = 20.0
KAFKA_STOP_TIMEOUT_S = 30.0
MIGRATE_TIMEOUT_S = 300.0
TIMESCALEDB_BUILD_TIMEOUT_S = 1800.0  # ~2.5 min on two cores; apt-get may come first
POLL_S = 0.25

KAFKA_READY_LINE = "Kafka Server started"
KAFKA_JVM_OPTS = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
#: Server settings of a cluster with TimescaleDB. Each database with the extension runs a
#: scheduler background worker while it exists (the suite has a few at once), each job one more.
TIMESCALEDB_SETTINGS = (
    "shared_preload_libraries=timescaledb",
    "timescaledb.telemetry_level=off",
    "timescaledb.max_background_workers=16",
    "max_worker_processes=27",  # TimescaleDB's workers + PostgreSQL's 8 parallel + 3 of its own
)
PG_SUPERUSER = "postgres"
PG_OS_USER = "postgres"  # initdb/pg_ctl refuse root; as root they run as this user
TRUTHY = frozenset({"1", "true", "yes", "on", "t", "y"})
INSTALL_HINT = "run `bash scripts/install-system-deps.sh`"

# CREATE ROLE/DATABASE have no IF NOT EXISTS, and CREATE DATABASE cannot run in a DO
# block: psql's \gexec runs each generated statement (none when the object exists).
ENSURE_ROLE_AND_DB_SQL = r"""
SELECT 'CREATE ROLE tokentide'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tokentide') \gexec
ALTER ROLE tokentide LOGIN PASSWORD 'tokentide' CREATEDB CREATEROLE;
SELECT 'CREATE DATABASE tokentide OWNER tokentide'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tokentide') \gexec
"""


class StackError(Exception):
    """A failure whose message tells the user what to do about it."""


@dataclass(frozen=True)
class Service:
    """`tokentide <name>`, long-running; ready when /healthz on its port answers 200.

    The port is the service's own setting, `port_variable` (read when asked), else
    `default_port`: the stack checks and prints the port the service will listen on.
    """

    name: str
    default_port: int
    label: str
    port_variable: str

    @property
    def port(self) -> int:
        return _env_port(self.port_variable, self.default_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


SERVICES = (
    Service("ingest", 4318, "OTLP/HTTP", "TOKENTIDE_INGEST_PORT"),
    Service("streams", 6066, "streams", "TOKENTIDE_STREAMS_PORT"),
    Service("sink", 9464, "sink metrics", "TOKENTIDE_SINK_PORT"),
    Service("dashboard", 8000, "dashboard", "TOKENTIDE_DASHBOARD_PORT"),
    Service("notify", 9465, "notify metrics", "TOKENTIDE_NOTIFY_PORT"),
)
COMPONENTS = ("kafka", "postgres", "postgres-timescale", *(s.name for s in SERVICES))


@dataclass
class Infra:
    """The Kafka and PostgreSQL in use; `started` names the components started."""

    kafka_bootstrap: str
    database_url: str
    kafka_external: bool
    database_external: bool
    started: list[str] = field(default_factory=list)
    #: The TimescaleDB leg's server (`run --timescale`), None without one, and the local
    #: binaries with TimescaleDB (tests start private clusters from them), None without.
    timescale_url: str | None = None
    timescale_bin: str | None = None
    #: What `up` says of the database's layout, once migrated.
    layout: str = ""


# ----------------------------------------------------------------------------- helpers


def _say(message: str) -> None:
    print(f"stack: {message}", flush=True)


def _env_port(var: str, default: int) -> int:
    """Port in env `var`, else `default`; StackError unless 1..65534."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65534:
        raise StackError(f"{var}={raw!r} is not a port; set a free one such as {default}")
    return int(raw)


def kafka_port() -> int:
    """Client port of the local broker; its KRaft controller listens on the next one."""
    return _env_port("TOKENTIDE_KAFKA_PORT", 9092)


def grpc_port() -> int:
    """OTLP/gRPC port of the ingest service (its TOKENTIDE_GRPC_PORT)."""
    return _env_port("TOKENTIDE_GRPC_PORT", 4317)


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when host:port accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _redact(url: str) -> str:
    """`url` with its password, if any, replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _run(argv: Sequence[str], what: str, fix: str, stdin: str | None = None) -> str:
    """Run argv to completion, feeding it `stdin`; return stdout and stderr combined.

    On failure raise StackError saying `what` failed, its output, and `fix`.
    """
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise StackError(f"{what} failed: {exc}\n{fix}") from exc
    if done.returncode != 0:
        output = done.stdout.rstrip()
        raise StackError(f"{what} failed (exit {done.returncode}):\n{output}\n{fix}")
    return str(done.stdout)


# ------------------------------------------------------------- processes and pid files


def _pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _log_file(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None without /proc or pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces


def _alive(pid: int) -> bool:
    """True while `pid` runs (zombies do not count); reaps it if it is our child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (the postmaster when we are not root)
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"


def _started_before(pid: int, when: float) -> bool:
    """False if /proc shows `pid` started after epoch time `when` (the pid was reused).

    Without /proc (not Linux) it cannot tell and returns True.
    """
    fields = _proc_stat(pid)
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return True
    boot = [int(line.split()[1]) for line in lines if line.startswith("btime ")]
    if fields is None or not boot:
        return True
    started_at = boot[0] + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22
    return started_at <= when + 2.0  # btime has 1 s resolution


def running_pid(name: str) -> int | None:
    """The pid in .local/run/<name>.pid if that process still runs, else None."""
    path = _pid_file(name)
    try:
        pid = int(path.read_text().strip())
        written_at = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _started_before(pid, written_at) else None


def _spawn(
    name: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """Start argv detached and record its pid in .local/run/<name>.pid.

    It gets a new session, stdin from /dev/null, and stdout plus stderr appended to
    .local/log/<name>.log. Returns (pid, size of that log before the start).
    """
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with _log_file(name).open("ab") as log:
        offset = log.seek(0, os.SEEK_END)
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid, offset


def _log_since(name: str, offset: int) -> str:
    """What was appended to .local/log/<name>.log after byte `offset`."""
    try:
        with _log_file(name).open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 40) -> str:
    kept = text.rstrip().splitlines()[-lines:] or ["(log is empty)"]
    return "\n".join(f"    {line}" for line in kept)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to pid's process group if pid leads one (ours do), else to pid."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_exit(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait up to `timeout` s for all `pids` to exit; return those still running."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if _alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = [pid for pid in left if _alive(pid)]
    return left


def _terminate(names: Sequence[str], timeout: float) -> None:
    """Stop the recorded processes of `names` at once: SIGTERM, `timeout` s, SIGKILL.

    Only pids read from .local/run are signalled; the pid files are removed.
    """
    pids = {name: pid for name in names if (pid := running_pid(name)) is not None}
    for pid in pids.values():
        _signal(pid, signal.SIGTERM)
    stubborn = _wait_exit(pids.values(), timeout)
    for pid in stubborn:
        _signal(pid, signal.SIGKILL)
    _wait_exit(stubborn, 10.0)
    for name in names:
        _pid_file(name).unlink(missing_ok=True)
    for name, pid in pids.items():
        late = f", killed: no exit {timeout:.0f} s after SIGTERM" if pid in stubborn else ""
        _say(f"stopped {name} (pid {pid}{late})")


# ------------------------------------------------------------------------------- Kafka


def java_binary() -> str:
    """Path of `java`: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = Path(os.environ.get("JAVA_HOME") or "/nonexistent")
    if os.access(java_home / "bin" / "java", os.X_OK):
        return str(java_home / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError(f"java 17+ not found: {INSTALL_HINT}, or set KAFKA_BOOTSTRAP")
    return found


def fetch_kafka_jars() -> None:
    """Fill .local/kafka/libs with the broker classpath, unless already done."""
    marker = KAFKA_LIBS / f".kafka-{KAFKA_VERSION}"
    if marker.exists():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"mvn not found (it fetches the Kafka jars): {INSTALL_HINT}")
    staging = KAFKA_DIR / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _say(f"fetching the Kafka {KAFKA_VERSION} jars with Maven (first run only)")
    goal = ["dependency:copy-dependencies", "-DincludeScope=runtime", "-Dstyle.color=never"]
    _run(
        [mvn, "-q", "-B", "-f", str(KAFKA_POM), *goal, f"-DoutputDirectory={staging}"],
        "fetching the Kafka jars",
        "Maven needs Maven Central or a mirror (~/.m2/settings.xml); retry `up`.",
    )
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    staging.rename(KAFKA_LIBS)
    marker.write_text(f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}\n")


def server_properties(port: int, data_dir: Path = KAFKA_DATA) -> str:
    """Config of one combined broker+controller KRaft node on 127.0.0.1:port, port+1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{port + 1}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
        "log.cleaner.dedupe.buffer.size": "16777216",
        # A raw OTLP request can exceed the 1 MB default as one message.
        "message.max.bytes": "16777216",
        "replica.fetch.max.bytes": "16777216",
        "log.retention.hours": "24",
    }
    lines = [f"{key}={value}" for key, value in props.items()]
    return "# Written by scripts/stack.py on every `up`.\n" + "\n".join(lines) + "\n"


def _kafka_cluster_id(java: str) -> str:
    """The id kept in .local/kafka/cluster.id; StorageTool generates it on first use."""
    if KAFKA_CLUSTER_ID.exists():
        return KAFKA_CLUSTER_ID.read_text().strip()
    out = _run(
        [java, "-cp", KAFKA_CLASSPATH, "kafka.tools.StorageTool", "random-uuid"],
        "generating a Kafka cluster id",
        f"Delete {KAFKA_LIBS} so that `up` fetches the jars again.",
    )
    found = re.findall(r"^[A-Za-z0-9_-]{22}$", out, re.MULTILINE)
    if not found:
        raise StackError(f"StorageTool printed no cluster id:\n{out}\nDelete {KAFKA_LIBS}.")
    KAFKA_CLUSTER_ID.write_text(found[-1] + "\n")
    return str(found[-1])


def _format_kafka_storage(java: str, properties: Path) -> None:
    """Format .local/kafka/data for KRaft unless it holds meta.properties already."""
    if (KAFKA_DATA / "meta.properties").exists():
        return
    cluster_id = _kafka_cluster_id(java)
    args = ["format", "-t", cluster_id, "-c", str(properties), "--ignore-formatted"]
    _run(
        [java, "-cp", KAFKA_CLASSPATH, "kafka.tools.StorageTool", *args],
        "formatting the Kafka storage",
        f"Delete {KAFKA_DATA} and {KAFKA_CLUSTER_ID}, then run `up` again.",
    )


def _wait_kafka(pid: int, offset: int, port: int) -> str | None:
    """None once the broker logged its ready line and accepts TCP, else why not."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            return "the broker process exited"
        logged_ready = KAFKA_READY_LINE in _log_since("kafka", offset)
        if logged_ready and _port_open("127.0.0.1", port):
            return None
        time.sleep(POLL_S)
    return f"the broker was not ready within {START_TIMEOUT_S:.0f} s"


def _start_kafka(port: int) -> None:
    """Prepare and start the local broker, retrying; StackError if it never is ready."""
    java = java_binary()
    fetch_kafka_jars()
    KAFKA_LOGS.mkdir(parents=True, exist_ok=True)
    properties = KAFKA_DIR / "server.properties"
    properties.write_text(server_properties(port))
    _format_kafka_storage(java, properties)
    argv = [
        java,
        *KAFKA_JVM_OPTS,
        f"-Dkafka.logs.dir={KAFKA_LOGS}",
        f"-Dlog4j.configuration={KAFKA_LOG4J.as_uri()}",
        "-cp",
        KAFKA_CLASSPATH,
        "kafka.Kafka",
        str(properties),
    ]
    log_text = ""
    for attempt in range(1, KAFKA_START_ATTEMPTS + 1):
        _say(f"starting Kafka on 127.0.0.1:{port} ({attempt}/{KAFKA_START_ATTEMPTS})")
        pid, offset = _spawn("kafka", argv, cwd=KAFKA_DIR)
        problem = _wait_kafka(pid, offset, port)
        if problem is None:
            _say(f"Kafka is ready (pid {pid})")
            return
        log_text = _log_since("kafka", offset)
        _say(f"Kafka start failed: {problem}")
        _terminate(["kafka"], KAFKA_STOP_TIMEOUT_S)
    raise StackError(
        f"Kafka did not start in {KAFKA_START_ATTEMPTS} attempts. "
        f"End of {_log_file('kafka')}:\n{_tail(log_text)}\n"
        f"If its data dir is unusable (e.g. another cluster id), delete {KAFKA_DATA} "
        f"and {KAFKA_CLUSTER_ID}; or set KAFKA_BOOTSTRAP to a running broker."
    )


def _check_bootstrap(bootstrap: str) -> None:
    """StackError unless some host:port of a KAFKA_BOOTSTRAP list accepts TCP."""
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition("://")[2].rpartition(":")
        if port.isdigit() and _port_open(host.strip("[]"), int(port), timeout=3.0):
            return
    raise StackError(
        f"KAFKA_BOOTSTRAP={bootstrap!r} accepts no TCP connection. Start that broker, "
        "fix the address (host:port[,host:port]), or unset it to run a local one."
    )


def _ensure_kafka(started: list[str]) -> tuple[str, bool]:
    """Return (bootstrap address, external?), starting the local broker if needed.

    Appends "kafka" to `started` when it starts one.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP", "").strip()
    if external:
        _check_bootstrap(external)
        _say(f"using the external Kafka at {external}")
        return external, True
    port = kafka_port()
    bootstrap = f"127.0.0.1:{port}"
    pid = running_pid("kafka")
    if pid is not None:
        _say(f"Kafka is running already (pid {pid})")
        if _wait_kafka(pid, 0, port) is not None:
            message = f"Kafka (pid {pid}) runs but {bootstrap} is not ready"
            raise StackError(f"{message}; run `down`, then `up`.")
        return bootstrap, False
    started.append("kafka")
    _start_kafka(port)
    return bootstrap, False


# -------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster of this stack: data in <directory>/data, unix socket in
    <directory>/run, pid file and log under the component name `name`."""

    name: str
    directory: Path
    port_var: str
    default_port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def run(self) -> Path:
        return self.directory / "run"

    @property
    def port(self) -> int:
        return _env_port(self.port_var, self.default_port)

    @property
    def url(self) -> str:
        return f"postgresql://tokentide:tokentide@127.0.0.1:{self.port}/tokentide"


#: The cluster of `up` (TimescaleDB preloaded when available) and of the suite's plain leg.
PLAIN_PG = Cluster("postgres", PG_DIR, "TOKENTIDE_PG_PORT", 5432)
#: The suite's TimescaleDB leg (`run --timescale`): its own data dir and port.
TIMESCALE_PG = Cluster("postgres-timescale", PG_TIMESCALE_DIR, "TOKENTIDE_TIMESCALE_PG_PORT", 5433)


@dataclass(frozen=True)
class TimescaleDB:
    """PostgreSQL binaries with the timescaledb extension installed, and where they came from."""

    bin_dir: Path
    origin: str


def _system_pg_bin_dirs() -> dict[int, Path]:
    """Debian's /usr/lib/postgresql/<major>/bin directories holding pg_ctl, by major."""
    return {
        int(p.parent.name): p
        for p in Path("/usr/lib/postgresql").glob("*/bin")
        if p.parent.name.isdigit() and (p / "pg_ctl").exists()
    }


def _pg_bin_dir(cluster: Cluster = PLAIN_PG) -> Path:
    """The directory with initdb, pg_ctl and psql of the system's PostgreSQL.

    Debian's /usr/lib/postgresql/<major>/bin: the major of the cluster's existing data dir,
    else the newest; without those, the directory of `pg_ctl` on PATH.
    """
    installed = _system_pg_bin_dirs()
    version_file = cluster.data / "PG_VERSION"
    if installed and version_file.exists():
        major = int(version_file.read_text().strip())
        if major not in installed:
            raise StackError(
                f"{cluster.data} was made by PostgreSQL {major}, which is not installed. "
                f"Install postgresql-{major}, or delete {cluster.directory} (and its data)."
            )
        return installed[major]
    if installed:
        return installed[max(installed)]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise StackError(f"pg_ctl/initdb not found: {INSTALL_HINT}, or set DATABASE_URL")
    return Path(pg_ctl).parent


def _has_timescaledb(bin_dir: Path) -> bool:
    """Whether the PostgreSQL of `bin_dir` has the timescaledb extension installed."""
    pg_config = bin_dir / "pg_config"
    if not os.access(pg_config, os.X_OK):
        return False
    done = subprocess.run(
        [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False, timeout=30
    )
    share = Path(done.stdout.strip())
    return done.returncode == 0 and (share / "extension" / "timescaledb.control").exists()


def find_timescaledb() -> TimescaleDB | None:
    """PostgreSQL binaries with TimescaleDB, or None when this machine has none.

    With TIMESCALEDB_SOURCE (a timescaledb-<version>.tar.gz), scripts/install-timescaledb.sh
    builds it once into .local/timescaledb and these are that copy's binaries; else a system
    PostgreSQL with the extension installed (a package); else a copy built by an earlier run.
    A build that fails raises StackError.
    """
    source = os.environ.get("TIMESCALEDB_SOURCE", "").strip()
    if not source:
        for major, bin_dir in sorted(_system_pg_bin_dirs().items(), reverse=True):
            if _has_timescaledb(bin_dir):
                return TimescaleDB(bin_dir, f"the system's PostgreSQL {major}")
    env = dict(os.environ)
    if source:
        env["TIMESCALEDB_SOURCE"] = str(Path(source).expanduser().resolve())
    try:
        done = subprocess.run(
            ["bash", str(TIMESCALEDB_INSTALLER)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            timeout=TIMESCALEDB_BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"building TimescaleDB took over {TIMESCALEDB_BUILD_TIMEOUT_S:.0f} s") from exc
    if done.returncode == 2 and not source:
        return None  # nothing built yet, nothing to build from
    if done.returncode != 0:
        raise StackError(
            f"{TIMESCALEDB_INSTALLER.name} failed (exit {done.returncode}); its messages are above. "
            "Fix that, or unset TIMESCALEDB_SOURCE to run on plain PostgreSQL."
        )
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    return TimescaleDB(
        bin_dir, f"built from {Path(source).name if source else 'an earlier TIMESCALEDB_SOURCE'}"
    )


def _as_pg_user(argv: Sequence[str]) -> list[str]:
    """The command run as the postgres OS user when we are root (pg_ctl refuses root)."""
    if os.geteuid() != 0:
        return list(argv)
    if shutil.which("runuser") is None:
        raise StackError(f"runuser not found (runs PostgreSQL as root): {INSTALL_HINT}")
    return ["runuser", "-u", PG_OS_USER, "--", *argv]


def _make_traversable(directory: Path) -> None:
    """Add others' search (x, not read) permission to `directory` and its ancestors
    where missing, so that the postgres OS user reaches it; report each change."""
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            _say(f"added o+x to {path} so that `{PG_OS_USER}` reaches {directory}")


def _prepare_pg_dirs(cluster: Cluster, bin_dir: Path) -> None:
    """Create the cluster's data and run dirs and its server log; as root give them to postgres
    and make them (and `bin_dir`, a copy under .local for TimescaleDB) reachable by it."""
    for directory, mode in ((cluster.directory, 0o755), (cluster.data, 0o700), (cluster.run, 0o755)):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(mode)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = _log_file(cluster.name)
    log.touch()
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(PG_OS_USER)
    except KeyError as exc:
        raise StackError(f"OS user `{PG_OS_USER}` is missing: {INSTALL_HINT}") from exc
    for path in (cluster.directory, cluster.data, cluster.run, log):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    _make_traversable(cluster.run)
    _make_traversable(LOG_DIR)
    _make_traversable(bin_dir)


def _init_pg_cluster(cluster: Cluster, bin_dir: Path) -> None:
    """Run initdb on the cluster's data dir unless it holds a cluster already."""
    if (cluster.data / "PG_VERSION").exists():
        return
    _say(f"creating a PostgreSQL cluster in {cluster.data}")
    # A local dev stack: trust on the unix socket, which only <cluster>/run exposes;
    # passwords (scram-sha-256) over TCP.
    auth = ["--auth-local=trust", "--auth-host=scram-sha-256"]
    initdb = [str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", PG_SUPERUSER]
    _run(
        _as_pg_user([*initdb, "-E", "UTF8", "--no-locale", *auth]),
        "initdb",
        f"Delete {cluster.directory} and run again; or set DATABASE_URL to another server.",
    )


def _pg_ctl(cluster: Cluster, bin_dir: Path, *args: str) -> list[str]:
    """Command line of pg_ctl on the cluster's data dir, as the right OS user."""
    return _as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(cluster.data), *args])


def _start_pg(cluster: Cluster, bin_dir: Path, timescale: bool) -> None:
    """Start the cluster on 127.0.0.1:<its port>, socket in <cluster>/run, TimescaleDB
    preloaded when `timescale`; record its pid."""
    socket_dir = shlex.quote(str(cluster.run))  # pg_ctl hands -o to a shell
    options = f"-p {cluster.port} -k {socket_dir} -c listen_addresses=127.0.0.1"
    options += " -c max_connections=200"
    if timescale:
        options += "".join(f" -c {setting}" for setting in TIMESCALEDB_SETTINGS)
    log = str(_log_file(cluster.name))
    what = " with TimescaleDB" if timescale else ""
    _say(f"starting PostgreSQL{what} on 127.0.0.1:{cluster.port}")
    _run(
        _pg_ctl(cluster, bin_dir, "-w", "-t", "60", "-l", log, "-o", options, "start"),
        "pg_ctl start",
        f"See {log}; or set DATABASE_URL to use another server.",
    )
    postmaster_pid = (cluster.data / "postmaster.pid").read_text().split()[0]
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    _pid_file(cluster.name).write_text(f"{postmaster_pid}\n")


def _ensure_role_and_db(cluster: Cluster, bin_dir: Path) -> None:
    """Create role tokentide (password tokentide) and its database when missing."""
    where = ["-h", str(cluster.run), "-p", str(cluster.port), "-U", PG_SUPERUSER, "-d", "postgres"]
    _run(
        [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *where],
        "creating the role and database tokentide",
        f"See {_log_file(cluster.name)}; `down`, then `up` tries again.",
        stdin=ENSURE_ROLE_AND_DB_SQL,
    )


def _check_database_url(url: str, var: str = "DATABASE_URL") -> None:
    """StackError unless the server of `url` (from env `var`) answers (pg_isready, else TCP)."""
    pg_isready = shutil.which("pg_isready")
    if pg_isready is not None:
        probe = [pg_isready, "-q", "-t", "5", "-d", url]
        ok = subprocess.run(probe, check=False).returncode == 0
    else:
        parts = urllib.parse.urlsplit(url)
        ok = _port_open(parts.hostname or "127.0.0.1", parts.port or 5432, 5.0)
    if not ok:
        raise StackError(
            f"{var}={_redact(url)} is not reachable. Start that server, fix "
            f"the URL, or unset {var} to run a local PostgreSQL."
        )


def _ensure_cluster(cluster: Cluster, started: list[str], timescaledb: TimescaleDB | None) -> None:
    """Start the local `cluster` unless it runs: from the binaries of `timescaledb` with the
    extension preloaded when given, else from the system's. Appends its name to `started` when
    it starts it; makes sure it has role and database tokentide."""
    pid = running_pid(cluster.name)
    bin_dir = timescaledb.bin_dir if timescaledb is not None else _pg_bin_dir(cluster)
    if pid is not None:
        _say(f"PostgreSQL ({cluster.name}) is running already (pid {pid})")
    else:
        _prepare_pg_dirs(cluster, bin_dir)
        _init_pg_cluster(cluster, bin_dir)
        started.append(cluster.name)
        _start_pg(cluster, bin_dir, timescale=timescaledb is not None)
    _ensure_role_and_db(cluster, bin_dir)


def _ensure_postgres(started: list[str], timescaledb: TimescaleDB | None) -> tuple[str, bool]:
    """Return (DATABASE_URL, external?), starting the local cluster if needed (with
    TimescaleDB preloaded when `timescaledb` is given)."""
    external = os.environ.get("DATABASE_URL", "").strip()
    if external:
        _check_database_url(external)
        _say(f"using the external PostgreSQL at {_redact(external)}")
        return external, True
    _ensure_cluster(PLAIN_PG, started, timescaledb)
    return PLAIN_PG.url, False


def _ensure_timescale_postgres(started: list[str]) -> tuple[str | None, TimescaleDB | None]:
    """The TimescaleDB server of the suite's TimescaleDB leg: (its URL or None, the local
    binaries with TimescaleDB when this machine has them).

    TIMESCALE_DATABASE_URL when set; else a local cluster of its own (data dir, port) on the
    binaries of :func:`find_timescaledb`; None when this machine has no TimescaleDB, which
    under CI=true is an error.
    """
    external = os.environ.get("TIMESCALE_DATABASE_URL", "").strip()
    if external:
        _check_database_url(external, "TIMESCALE_DATABASE_URL")
        _say(f"using the external TimescaleDB at {_redact(external)}")
        return external, None
    timescaledb = find_timescaledb()
    if timescaledb is None:
        if os.environ.get("CI", "").strip().lower() in TRUTHY:
            raise StackError(
                "CI=true and no TimescaleDB for the suite's TimescaleDB leg: set TIMESCALEDB_SOURCE "
                "to a timescaledb-<version>.tar.gz (.ci/run does when the shared vendor folder has "
                "one), install TimescaleDB for the system's PostgreSQL, or set TIMESCALE_DATABASE_URL."
            )
        _say(
            "no TimescaleDB on this machine: only the plain-PostgreSQL leg runs (set "
            "TIMESCALEDB_SOURCE to a timescaledb-<version>.tar.gz to build it once)"
        )
        return None, None
    _say(f"TimescaleDB: {timescaledb.origin} ({timescaledb.bin_dir})")
    _ensure_cluster(TIMESCALE_PG, started, timescaledb)
    return TIMESCALE_PG.url, timescaledb


def _stop_pg(cluster: Cluster) -> None:
    """`pg_ctl stop -m fast` the cluster if its pid file says it runs; drop the file."""
    pid = running_pid(cluster.name)
    if pid is not None:
        _run(
            _pg_ctl(cluster, _pg_bin_dir(cluster), "-m", "fast", "-w", "-t", "60", "stop"),
            "pg_ctl stop",
            f"See {_log_file(cluster.name)}; `kill -INT {pid}` stops it too.",
        )
        _say(f"stopped {cluster.name} (pid {pid})")
    _pid_file(cluster.name).unlink(missing_ok=True)


def _psql_value(url: str, query: str) -> str | None:
    """The single value `query` returns on the server at `url` ("" for no row), None when
    psql is missing or fails."""
    psql = shutil.which("psql")
    if psql is None:
        return None
    try:
        done = subprocess.run(
            [psql, "-X", "-A", "-t", "-q", "-d", url, "-c", query],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def database_layout(url: str) -> str | None:
    """The layout `tokentide migrate` recorded in the database at `url` (plain, timescale),
    None when it cannot be read."""
    layout = _psql_value(url, "SELECT layout FROM schema_layout")
    return layout if layout in ("plain", "timescale") else None


# ---------------------------------------------------------------------------- services


def service_env(infra: Infra) -> dict[str, str]:
    """Environment of the tokentide processes: ours plus the infra addresses, and
    TOKENTIDE_OPEN_MODE=1 and TOKENTIDE_DATA_DIR=.local/streams unless set."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP"] = infra.kafka_bootstrap
    env["DATABASE_URL"] = infra.database_url
    env.setdefault("TOKENTIDE_OPEN_MODE", "1")
    env.setdefault("TOKENTIDE_DATA_DIR", str(STREAMS_DATA_DIR))
    return env


def _require_tokentide_bin() -> None:
    if not os.access(TOKENTIDE_BIN, os.X_OK):
        raise StackError(
            f"{TOKENTIDE_BIN} not found: create the venv first (`uv sync` in {REPO}); "
            "`up --infra` starts Kafka and PostgreSQL without it."
        )


def _migrate(env: Mapping[str, str]) -> None:
    """Run `tokentide migrate`, logging to .local/log/migrate.log; StackError unless 0."""
    _one_shot("migrate", ["migrate"], env)


def _ensure_topics(env: Mapping[str, str]) -> None:
    """Run `tokentide admin topics` (create or check the pipeline's topics, as compose and
    Helm do), logging to .local/log/topics.log; StackError unless 0."""
    _one_shot("topics", ["admin", "topics"], env)


def _one_shot(name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
    """Run `tokentide <args>` to completion, logging to .local/log/<name>.log; StackError unless 0."""
    command = " ".join(["tokentide", *args])
    _say(f"running `{command}`")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with _log_file(name).open("ab") as log:
        offset = log.seek(0, os.SEEK_END)
        try:
            code: int | None = subprocess.run(
                [str(TOKENTIDE_BIN), *args],
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=MIGRATE_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        outcome = f"exited {code}" if code is not None else "timed out"
        raise StackError(
            f"`{command}` {outcome}. End of {_log_file(name)}:\n"
            f"{_tail(_log_since(name, offset))}\nFix that, then run `up` again."
        )


def _http_ok(opener: urllib.request.OpenerDirector, url: str) -> bool:
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


def _wait_healthy(waiting: dict[str, tuple[int, int, float]]) -> None:
    """Poll until every service in `waiting` answers 200 on /healthz.

    `waiting` maps a service name to (pid, log offset, deadline). Raises StackError
    with the log tail of the first service that exits or misses its deadline.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
    by_name = {s.name: s for s in SERVICES}
    while waiting:
        for name, (pid, offset, deadline) in list(waiting.items()):
            url = f"{by_name[name].url}/healthz"
            if _http_ok(opener, url):
                _say(f"{name} is healthy (pid {pid})")
                del waiting[name]
                continue
            alive = _alive(pid)
            if alive and time.monotonic() < deadline:
                continue
            problem = f"did not answer {url} in time" if alive else "exited"
            raise StackError(
                f"`tokentide {name}` {problem}. End of {_log_file(name)}:\n"
                f"{_tail(_log_since(name, offset))}\nFix that, then run `up` again."
            )
        if waiting:
            time.sleep(POLL_S)


def start_services(infra: Infra) -> list[str]:
    """Run `tokentide migrate` and `tokentide admin topics`, start the services not
    running yet, wait until all answer /healthz, and return the names it started.

    On failure it stops those it started (others keep running) and raises StackError.
    """
    _require_tokentide_bin()
    env = service_env(infra)
    if "TOKENTIDE_DATA_DIR" not in os.environ:
        STREAMS_DATA_DIR.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    try:
        _migrate(env)
        _ensure_topics(env)
        waiting: dict[str, tuple[int, int, float]] = {}
        for service in SERVICES:
            pid = running_pid(service.name)
            if pid is not None:
                _say(f"{service.name} is running already (pid {pid})")
                waiting[service.name] = (pid, 0, time.monotonic() + START_TIMEOUT_S)
                continue
            if _port_open("127.0.0.1", service.port):
                raise StackError(
                    f"port {service.port} ({service.name}) is taken by a process this "
                    "stack did not start; stop that process, then run `up` again."
                )
            _say(f"starting {service.name} on {service.url}")
            argv = [str(TOKENTIDE_BIN), service.name]
            pid, offset = _spawn(service.name, argv, cwd=REPO, env=env)
            started.append(service.name)
            waiting[service.name] = (pid, offset, time.monotonic() + START_TIMEOUT_S)
        _wait_healthy(waiting)
    except BaseException:
        stop_started(started)
        raise
    return started


# -------------------------------------------------------------------------- public API


def _check_local_ports() -> None:
    """StackError if a port that a local Kafka or PostgreSQL still has to take is in
    use by a process this stack did not start. Runs before anything is started."""
    if not os.environ.get("KAFKA_BOOTSTRAP", "").strip() and not running_pid("kafka"):
        port = kafka_port()
        for busy in (port, port + 1):
            if _port_open("127.0.0.1", busy):
                raise StackError(
                    f"port {busy} is taken by a process this stack did not start. To "
                    f"use a broker there, set KAFKA_BOOTSTRAP=127.0.0.1:{port}; else "
                    "stop it or set TOKENTIDE_KAFKA_PORT to a free port (and the next)."
                )
    if not os.environ.get("DATABASE_URL", "").strip() and not running_pid(PLAIN_PG.name):
        port = PLAIN_PG.port
        if _port_open("127.0.0.1", port):
            raise StackError(
                f"port {port} is taken by a process this stack did not start (a system "
                "PostgreSQL?). To use that server, set DATABASE_URL=postgresql://USER:"
                f"PASSWORD@127.0.0.1:{port}/DB; else stop it or set TOKENTIDE_PG_PORT."
            )


def _check_timescale_port() -> None:
    """StackError if the TimescaleDB cluster's port is taken by a process we did not start."""
    if running_pid(TIMESCALE_PG.name) is None and _port_open("127.0.0.1", TIMESCALE_PG.port):
        raise StackError(
            f"port {TIMESCALE_PG.port} (the TimescaleDB leg's PostgreSQL) is taken by a process this "
            "stack did not start. Set TOKENTIDE_TIMESCALE_PG_PORT to a free port, or "
            "TIMESCALE_DATABASE_URL to a server with TimescaleDB."
        )


def start_infra(*, timescale_leg: bool = False) -> Infra:
    """Make Kafka and PostgreSQL available and return where they are.

    External ones (KAFKA_BOOTSTRAP, DATABASE_URL, TIMESCALE_DATABASE_URL) are only checked;
    local ones are started unless running from an earlier `up`. Without `timescale_leg`
    (`up`), the local PostgreSQL runs with TimescaleDB when :func:`find_timescaledb` finds it.
    With it (`run --timescale`, the test suite), the local PostgreSQL is the system's plain
    one and a second cluster with TimescaleDB is started for the TimescaleDB leg, if this
    machine has TimescaleDB (required under CI=true). On failure whatever this call started
    is stopped again and StackError is raised.
    """
    _check_local_ports()
    if timescale_leg and not os.environ.get("TIMESCALE_DATABASE_URL", "").strip():
        _check_timescale_port()
    started: list[str] = []
    try:
        kafka_bootstrap, kafka_external = _ensure_kafka(started)
        timescaledb = None
        local_pg = not os.environ.get("DATABASE_URL", "").strip()
        if not timescale_leg and local_pg and running_pid(PLAIN_PG.name) is None:
            timescaledb = find_timescaledb()
            if timescaledb is None:
                _say(
                    "no TimescaleDB on this machine: PostgreSQL runs without it (the plain layout); "
                    "set TIMESCALEDB_SOURCE to a timescaledb-<version>.tar.gz to build it once"
                )
            else:
                _say(f"TimescaleDB: {timescaledb.origin} ({timescaledb.bin_dir})")
        database_url, database_external = _ensure_postgres(started, timescaledb)
        timescale_url, leg_binaries = None, None
        if timescale_leg:
            timescale_url, leg_binaries = _ensure_timescale_postgres(started)
    except BaseException:
        stop_started(started)
        raise
    infra = Infra(kafka_bootstrap, database_url, kafka_external, database_external, started)
    infra.timescale_url = timescale_url
    infra.timescale_bin = str(leg_binaries.bin_dir) if leg_binaries else None
    return infra


def stop_started(names: Iterable[str]) -> None:
    """Stop those of the named components (see COMPONENTS) that run per .local/run.

    Services first (SIGTERM, 20 s, SIGKILL), then Kafka (SIGTERM, 30 s, SIGKILL),
    then the PostgreSQL clusters (pg_ctl stop -m fast). Nothing else is touched.
    """
    wanted = set(names)
    _terminate([s.name for s in SERVICES if s.name in wanted], SERVICE_STOP_TIMEOUT_S)
    if "kafka" in wanted:
        _terminate(["kafka"], KAFKA_STOP_TIMEOUT_S)
    for cluster in (PLAIN_PG, TIMESCALE_PG):
        if cluster.name in wanted:
            _stop_pg(cluster)


def stop_all() -> None:
    """Stop everything `up` started; a no-op when nothing runs."""
    stop_started(COMPONENTS)


def status_lines() -> list[str]:
    """One line per component: running (pid), external or stopped, and its address."""
    rows = [
        ("kafka", f"127.0.0.1:{kafka_port()}", os.environ.get("KAFKA_BOOTSTRAP", "")),
        (PLAIN_PG.name, PLAIN_PG.url, _redact(os.environ.get("DATABASE_URL", ""))),
        (TIMESCALE_PG.name, TIMESCALE_PG.url, _redact(os.environ.get("TIMESCALE_DATABASE_URL", ""))),
        *((s.name, s.url, "") for s in SERVICES),
    ]
    lines = []
    for name, local_address, external in rows:
        pid = running_pid(name)
        if pid is not None:
            lines.append(f"{name:<18} running   pid {pid:<8} {local_address}")
        elif external.strip():
            lines.append(f"{name:<18} external  {'':<12} {external.strip()}")
        else:
            lines.append(f"{name:<18} stopped   {'':<12} {local_address}")
    return lines


def env_lines() -> list[str]:
    """`export` lines for the Kafka and PostgreSQL in use (external ones if set), and for
    the TimescaleDB leg's server when one is set or runs."""
    kafka = os.environ.get("KAFKA_BOOTSTRAP", "").strip() or f"127.0.0.1:{kafka_port()}"
    database = os.environ.get("DATABASE_URL", "").strip() or PLAIN_PG.url
    lines = [
        f"export KAFKA_BOOTSTRAP={shlex.quote(kafka)}",
        f"export DATABASE_URL={shlex.quote(database)}",
    ]
    timescale = os.environ.get("TIMESCALE_DATABASE_URL", "").strip()
    if not timescale and running_pid(TIMESCALE_PG.name) is not None:
        timescale = TIMESCALE_PG.url
    if timescale:
        lines.append(f"export TIMESCALE_DATABASE_URL={shlex.quote(timescale)}")
    return lines


def layout_line(infra: Infra) -> str:
    """Which storage layout the stack's database has, and why (or, before `tokentide migrate`,
    which it will get)."""
    layout = database_layout(infra.database_url)
    offered = _psql_value(
        infra.database_url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if offered is None:
        return "unknown (psql cannot reach the database)"
    if layout == "timescale":
        return "timescale (TimescaleDB: hypertables, compression, retention policies)"
    if layout == "plain" and offered == "1":
        return (
            "plain (recorded when this database was first migrated, before TimescaleDB was "
            "here; `make clean` then `make up` re-creates it on TimescaleDB)"
        )
    if layout == "plain":
        return "plain PostgreSQL (no TimescaleDB on this server; TIMESCALEDB_SOURCE=<tarball> builds it)"
    chosen = "timescale" if offered == "1" else "plain"
    return f"none yet: `tokentide migrate` will lay the database out as {chosen}"


def summary_lines(infra: Infra, infra_only: bool) -> list[str]:
    """What `up` prints last: the addresses, the database layout, and in open mode its warning
    and how to point Claude Code at the stack."""
    kafka = infra.kafka_bootstrap + ("  (external)" if infra.kafka_external else "")
    database = infra.database_url
    if infra.database_external:
        database = f"{_redact(database)}  (external)"
    lines = [
        "",
        "tokentide infrastructure is up:" if infra_only else "tokentide is up:",
    ]
    if not infra_only:
        lines += [f"  {s.label:<13} {s.url}" for s in SERVICES]
        lines.insert(3, f"  {'OTLP/gRPC':<13} 127.0.0.1:{grpc_port()}")
    lines += [
        f"  {'Kafka':<13} {kafka}",
        f"  {'PostgreSQL':<13} {database}",
    ]
    if infra.layout:
        lines.append(f"  {'layout':<13} {infra.layout}")
    if infra.timescale_url:
        lines.append(f"  {'TimescaleDB':<13} {_redact(infra.timescale_url)}")
    lines += [
        f"  {'logs':<13} {LOG_DIR}/",
        f"  {'stop with':<13} python3 scripts/stack.py down",
    ]
    if infra_only:
        return [*lines, "", 'For a shell:  eval "$(python3 scripts/stack.py env)"']
    if service_env(infra)["TOKENTIDE_OPEN_MODE"].strip().lower() not in TRUTHY:
        return lines
    return [
        *lines,
        "",
        "OPEN MODE: one tenant (`default`) and NO authentication; anyone who reaches",
        "these ports reads and writes its data. Keep them on 127.0.0.1. For API keys,",
        "set TOKENTIDE_OPEN_MODE=0 and TOKENTIDE_REDACTION_KEY, then use `tokentide admin`.",
        "",
        "Point Claude Code at it (in the shell that starts `claude`):",
        "  export CLAUDE_CODE_ENABLE_TELEMETRY=1",
        "  export OTEL_METRICS_EXPORTER=otlp",
        "  export OTEL_LOGS_EXPORTER=otlp",
        "  export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
        f"  export OTEL_EXPORTER_OTLP_ENDPOINT={SERVICES[0].url}",
    ]


# --------------------------------------------------------------------------------- CLI


def cmd_up(infra_only: bool) -> None:
    """Start the infra, then (unless infra_only) migrate and start the services, and say
    which storage layout the database has.

    On failure everything this call started is stopped again.
    """
    if not infra_only:
        _require_tokentide_bin()
    infra = start_infra()
    if not infra_only:
        try:
            infra.started += start_services(infra)
        except BaseException:
            stop_started(infra.started)
            raise
    infra.layout = layout_line(infra)
    _say(f"database layout: {infra.layout}")
    print("\n".join(summary_lines(infra, infra_only)))


def run_with_infra(command: Sequence[str], *, timescale_leg: bool = False) -> int:
    """Run ``command`` with Kafka and PostgreSQL available; return its exit code.

    KAFKA_BOOTSTRAP and DATABASE_URL are set for it, and with `timescale_leg`
    TIMESCALE_DATABASE_URL (when this machine has TimescaleDB; see :func:`start_infra`) and
    TIMESCALEDB_PG_BIN (the bin directory of those binaries, when local).
    Whatever this call started is stopped afterwards; what was running already (an earlier
    `up`) is left running.
    """
    if not command:
        raise StackError("run needs a command after --, e.g. `stack.py run -- pytest`")
    infra = start_infra(timescale_leg=timescale_leg)
    try:
        env = {**os.environ, "KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "DATABASE_URL": infra.database_url}
        if infra.timescale_url:
            env["TIMESCALE_DATABASE_URL"] = infra.timescale_url
        if infra.timescale_bin:
            env["TIMESCALEDB_PG_BIN"] = infra.timescale_bin
        return subprocess.call(list(command), env=env)
    finally:
        stop_started(infra.started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; 0 on success, 1 on StackError, 130 when interrupted."""
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start what is not running yet")
    up.add_argument("--infra", action="store_true", help="only Kafka and PostgreSQL")
    commands.add_parser("down", help="stop everything `up` started")
    commands.add_parser("status", help="one line per component")
    commands.add_parser("env", help="export lines for KAFKA_BOOTSTRAP, DATABASE_URL")
    run = commands.add_parser("run", help="run a command with the infra up, then stop what was started")
    run.add_argument(
        "--timescale",
        action="store_true",
        help="also a PostgreSQL with TimescaleDB (TIMESCALE_DATABASE_URL), when this machine has it",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    actions: dict[str, Callable[[], None]] = {
        "up": lambda: cmd_up(args.infra),
        "down": stop_all,
        "status": lambda: print("\n".join(status_lines())),
        "env": lambda: print("\n".join(env_lines())),
    }
    try:
        if args.command == "run":
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return run_with_infra(command, timescale_leg=args.timescale)
        actions[args.command]()
    except StackError as exc:
        print(f"stack.py {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stack.py {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
