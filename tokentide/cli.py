"""``tokentide``: one console entry point, one sub-command per process.

Each sub-command builds its settings from the environment (refusing to start with a clear
message when they are invalid) and hands them to its service's factory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from tokentide import __version__

log = logging.getLogger("tokentide")


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(app: object, host: str, port: int, level: str, grace_s: float = 15) -> None:
    import uvicorn

    uvicorn.run(
        app,  # type: ignore[arg-type]  # a FastAPI app is an ASGI app
        host=host,
        port=port,
        log_level=level.lower(),
        access_log=False,
        timeout_graceful_shutdown=round(grace_s),
        lifespan="on",
        loop="uvloop",
        http="httptools",
    )


def run_ingest() -> None:
    from ingest.app import create_app
    from tokentide.settings import IngestSettings

    settings = IngestSettings()
    _logging(settings.log_level)
    _serve(
        create_app(settings),
        settings.host,
        settings.ingest_port,
        settings.log_level,
        settings.shutdown_grace_s,
    )


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


ADMIN_HELP = (
    "manage tenants, API keys and webhooks (DATABASE_URL) or the Kafka topics (KAFKA_BOOTSTRAP), then exit"
)

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
    if arguments[:1] == ["hook"]:
        # Claude Code runs this before every prompt: nothing heavy is imported on this path.
        from tokentide.hook import main as hook_main

        return hook_main(arguments[1:])
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
    sub.add_parser(
        "hook",
        help="Claude Code hook: checkpoints before compaction, context notices (tokentide hook --help)",
        add_help=False,
    )
    args = parser.parse_args(arguments)
    try:
        if args.command == "admin":
            return run_admin(args)
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
