"""``tokentide``: one console entry point, one sub-command per process.

Each sub-command builds its settings from the environment (refusing to start with a clear
message when they are invalid) and hands them to its service's factory.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tokentide import __version__

if TYPE_CHECKING:  # the hook path imports nothing heavy (asyncio included)
    import asyncio

    from tokentide.settings import IngestSettings

log = logging.getLogger("tokentide")


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


#: Largest header section (request line and headers) a service reads; 431 beyond. Agents send
#: a few hundred bytes; httptools itself buffers a header of any size (10 MB was accepted).
MAX_HEADER_BYTES = 64 * 1024
#: A client must have sent its whole header section this long after connecting, or after the
#: first byte of its next request on a kept-alive connection (idle ones are closed after
#: uvicorn's ``timeout_keep_alive``, 5 s); else the connection is closed (408). Bodies are the
#: services' own business (ingest bounds them by size and in-flight memory).
HEADER_TIMEOUT_S = 10.0


def _bounded_http(max_header_bytes: int, header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a bound on header bytes and on the time to send them.

    uvicorn has neither for httptools (``h11_max_incomplete_event_size`` is h11's only), and
    ``timeout_keep_alive`` starts only after a response, so a client trickling a header byte at a
    time (slowloris) or sending an endless header holds a connection and its memory for ever.
    Counting is per read, from the read in which the request began, except when a previous
    request also ended in that read (pipelining: the read holds that request's body too): then
    from the next read, so at most one read (256 KiB) more than the bound is ever held.
    """
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _in_headers = True
        _requested = False  # a request began and its header section is not complete
        _began = False  # ... in the current read
        _ended = False  # a request ended in the current read
        _header_bytes = 0  # read while the section is incomplete
        _parsed = 0  # of the section, as parsed
        _refused = False
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._began = self._ended = False
            super().data_received(data)
            pipelined = self._began and self._ended
            if self._in_headers and not pipelined and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._refuse(431, f"request header section over {max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._requested, self._began = True, True, True
            self._header_bytes = self._parsed = 0
            self._arm()

        def on_url(self, url: bytes) -> None:
            self._parsed += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._parsed += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = self._requested = False
            self._disarm()
            if self._parsed > max_header_bytes:  # a whole section in one read
                self._refuse(431, f"request header section over {max_header_bytes} bytes")
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._ended = True
            if not self._refused:
                super().on_message_complete()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _timed_out(self) -> None:
            self._header_timer = None
            if self._in_headers and not self.transport.is_closing():
                if self._requested:
                    self._refuse(408, f"request headers not received within {header_timeout_s:g} s")
                else:
                    self.transport.close()  # connected and silent: nothing to answer

        def _refuse(self, status: int, message: str) -> None:
            self._refused = True
            body = message.encode()
            self.transport.write(
                STATUS_LINE[status]
                + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            self.transport.close()

    return BoundedHttpToolsProtocol


def _serve(
    app: object,
    host: str,
    port: int,
    level: str,
    grace_s: float = 15,
    *,
    sockets: list[socket.socket] | None = None,
    proxy_headers: bool = True,
) -> None:
    """Run ``app`` with uvicorn (uvloop, httptools), headers bounded (:func:`_bounded_http`).

    No ``limit_concurrency``: past it uvicorn answers 503 to everyone, so a flood of idle
    connections would refuse the real clients too; the header timeout closes those instead,
    and each service bounds its own work (ingest: in-flight bytes, tenant rates).
    """
    import uvicorn

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]  # a FastAPI app is an ASGI app
        host=host,
        port=port,
        log_level=level.lower(),
        access_log=False,
        timeout_graceful_shutdown=round(grace_s),
        lifespan="on",
        loop="uvloop",
        http=_bounded_http(MAX_HEADER_BYTES, HEADER_TIMEOUT_S),
        proxy_headers=proxy_headers,
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits


def run_ingest() -> None:
    from ingest.workers import supervise, usable_cpus
    from tokentide.settings import IngestSettings

    settings = IngestSettings()
    _logging(settings.log_level)
    workers = settings.worker_count(usable_cpus())
    if workers == 1:
        _serve_ingest(settings)
        return
    # Each worker holds its share of the in-flight budget (ingest/workers.py).
    share = settings.model_copy(update={"max_inflight_bytes": settings.max_inflight_bytes // workers})
    sys.exit(supervise(share, workers, _ingest_worker))


def _serve_ingest(settings: IngestSettings, sockets: list[socket.socket] | None = None) -> None:
    from ingest.app import create_app

    app = create_app(settings, worker=sockets is not None)
    _tune_gc()
    # No proxy headers: ingest reads no client address, and parsing them costs per request.
    _serve(
        app,
        settings.host,
        settings.ingest_port,
        settings.log_level,
        settings.shutdown_grace_s,
        sockets=sockets,
        proxy_headers=False,
    )


#: Allocations (less deallocations) of container objects between two young collections;
#: CPython's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc() -> None:
    """Fewer garbage collections in a request-serving process.

    Each request allocates thousands of short-lived objects (protobuf wrappers, coroutines,
    futures); at CPython's default threshold the collector ran every ~700 of them and promoted
    survivors into the old generations, whose collections walk every object the imports made
    (4-5% of ingest's CPU in a profile). The objects alive at startup are frozen (never
    scanned again) and young collections run 14x less often; cycles are still collected.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _ingest_worker(settings: IngestSettings, index: int) -> None:
    """One of several ingest workers (ingest/workers.py): its own SO_REUSEPORT socket."""
    from ingest.workers import reuseport_socket

    log.debug("ingest worker %d starting (pid %d)", index, os.getpid())
    _serve_ingest(settings, [reuseport_socket(settings.host, settings.ingest_port)])


def run_streams() -> None:
    from streams.app import create_app
    from tokentide.settings import StreamsSettings

    settings = StreamsSettings()
    _logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _serve(create_app(settings), settings.host, settings.streams_port, settings.log_level, grace_s=30)


def run_sink() -> None:
    from sinks.app import create_app
    from tokentide.settings import SinkSettings

    settings = SinkSettings()
    _logging(settings.log_level)
    _serve(create_app(settings), settings.host, settings.sink_port, settings.log_level)


def run_dashboard() -> None:
    from dashboard.app import create_app
    from tokentide.settings import DashboardSettings

    settings = DashboardSettings()
    _logging(settings.log_level)
    _serve(create_app(settings), settings.host, settings.dashboard_port, settings.log_level)


def run_migrate() -> None:
    from tokentide.migrate import migrate
    from tokentide.settings import MigrateSettings

    settings = MigrateSettings()
    _logging(settings.log_level)
    applied = migrate(settings.database_url.get_secret_value())
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")


def run_notify() -> None:
    from notify.app import create_app
    from tokentide.settings import NotifySettings

    settings = NotifySettings()
    _logging(settings.log_level)
    _serve(create_app(settings), settings.host, settings.notify_port, settings.log_level)


def run_admin(args: argparse.Namespace) -> int:
    from tokentide import admin
    from tokentide.settings import DatabaseSettings, StreamsSettings

    if args.admin_object == "topics":  # Kafka only: the streams settings name its changelogs
        return admin.run_topics(args, StreamsSettings())
    return admin.run(args, DatabaseSettings().database_url.get_secret_value())


#: Models seen in the data: per model, the sessions that used it, its usage requests and
#: those of them whose cost is unknown (the pipeline's role reads every tenant).
SEEN_MODELS = """
    SELECT model, sum(sessions)::bigint, sum(requests)::bigint, sum(unpriced)::bigint FROM (
        SELECT m AS model, count(*) AS sessions, 0 AS requests, 0 AS unpriced
          FROM sessions, unnest(models) AS m GROUP BY m
        UNION ALL
        SELECT model, 0, count(*) FILTER (WHERE kind = 'usage'),
               count(*) FILTER (WHERE kind = 'usage' AND cost_usd IS NULL)
          FROM events WHERE model IS NOT NULL GROUP BY model
    ) AS seen GROUP BY model ORDER BY model
"""


def run_prices(args: argparse.Namespace) -> int:
    """``tokentide prices check``: the models seen in the database (``sessions.models``,
    ``events.model``) that the price table cannot price; exit 1 when there are any, 2 when
    the database cannot be read."""
    import psycopg

    from streams.pricing import default_table
    from tokentide.settings import DatabaseSettings

    dsn = DatabaseSettings().database_url.get_secret_value()
    table = default_table()
    print(f"price table {table.full_version}")
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            seen = conn.execute(SEEN_MODELS).fetchall()
    except psycopg.Error as exc:
        print(f"tokentide prices check: cannot read the database: {exc}", file=sys.stderr)
        return 2
    missing = [
        (str(model), sessions, requests, unpriced)
        for model, sessions, requests, unpriced in seen
        if model and str(model) not in table
    ]
    if not missing:
        print(f"every model seen in the data ({len(seen)}) has a price")
        return 0
    print(f"{len(missing)} of the {len(seen)} models seen in the data have no price:")
    width = max(len(m) for m, *_ in missing)
    for model, sessions, requests, unpriced in missing:
        print(f"  {model:<{width}}  {sessions} sessions, {requests} requests, {unpriced} of unknown cost")
    print("add them to streams/prices.local.json (with a reason) or move the LiteLLM pin")
    return 1


ADMIN_HELP = (
    "manage tenants, API keys and webhooks (DATABASE_URL) or the Kafka topics (KAFKA_BOOTSTRAP), then exit"
)

PRICES_HELP = "the price table (streams/prices.json and prices.local.json) against the data, then exit"

COMMANDS: dict[str, tuple[Callable[[], None], str]] = {
    "ingest": (run_ingest, "OTLP/HTTP (port 4318) and OTLP/gRPC (port 4317) receiver publishing to Kafka"),
    "streams": (
        run_streams,
        "stream worker: normalise, deduplicate, keep per-session state, signals (port 6066)",
    ),
    "sink": (run_sink, "batch writer from Kafka into PostgreSQL"),
    "dashboard": (run_dashboard, "API over the database (port 8000)"),
    "migrate": (run_migrate, "apply database migrations, then exit"),
    "notify": (run_notify, "webhooks for context signals, with retries and a delivery log (port 9465)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] in (["hook"], ["statusline"]):
        # Claude Code runs these before every prompt and after every message: nothing heavy
        # is imported on this path.
        from tokentide.hook import main as hook_main
        from tokentide.hook import statusline_main

        return hook_main(arguments[1:]) if arguments[0] == "hook" else statusline_main()
    from pydantic import ValidationError

    from tokentide import admin

    parser = argparse.ArgumentParser(
        prog="tokentide",
        description="Token, cost and context-window accounting for AI coding agents. "
        "Configuration comes from the environment (KAFKA_BOOTSTRAP, DATABASE_URL, TOKENTIDE_*).",
    )
    parser.add_argument("--version", action="version", version=f"tokentide {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    admin.add_commands(sub.add_parser("admin", help=ADMIN_HELP, description=ADMIN_HELP))
    prices = sub.add_parser("prices", help=PRICES_HELP, description=PRICES_HELP)
    prices_sub = prices.add_subparsers(dest="prices_command", required=True, metavar="ACTION")
    prices_sub.add_parser(
        "check",
        help="list the models seen in the database (DATABASE_URL) that have no price; exit 1 if any",
    )
    sub.add_parser(
        "hook",
        help="Claude Code hook: checkpoints before compaction, context notices (tokentide hook --help)",
        add_help=False,
    )
    sub.add_parser(
        "statusline",
        help="Claude Code status line: context, cost, requests to compaction; reports the window",
        add_help=False,
    )
    args = parser.parse_args(arguments)
    try:
        if args.command == "admin":
            return run_admin(args)
        if args.command == "prices":
            return run_prices(args)
        COMMANDS[args.command][0]()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"tokentide {args.command}: invalid configuration: {problems}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
