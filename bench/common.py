"""Set-up shared by the stand-alone bench scripts (bench_bulk, bench_queue, bench_reconcile, bench_forecast): the
embedded engines they start and stop, Django configured as production runs it (no query log), the reference data,
connections and roles, and the users they act as. The process benches (run.py, load.py, bench_time.py) have their
own `Engines` in run.py: they run web and worker processes, not one in-process measurement."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the script's `finally` stops the engines it started."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def refuse_external(names: tuple[str, ...], allowed: bool, why: str) -> list[str]:
    """Stop unless the user agreed to use the external services named in the environment: a bench writes (and
    deletes or truncates) rows there. Returns the names that are set."""
    external = [k for k in names if os.environ.get(k)]
    if external and not allowed:
        raise SystemExit(f"{' and '.join(external)} set: {why}")
    return external


def start_engines(data: Path, pg_port: int, valkey_port: int | None = None, *, fresh_database: bool = False) -> list:
    """Start embedded PostgreSQL (fsync off) and Valkey for whatever DATABASE_URL / REDIS_URL does not name, and
    point those variables at them. `fresh_database` drops and creates the database 'handoff' first. Returns the
    engines started, for stop_engines()."""
    from config.launcher import EmbeddedPostgres, EmbeddedValkey

    (data / "xdg").mkdir(parents=True, exist_ok=True, mode=0o700)  # the engines' sockets: a private runtime dir
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data / "xdg"))
    started = []
    if os.environ.get("DATABASE_URL"):
        say("PostgreSQL from DATABASE_URL")
    else:
        pg = EmbeddedPostgres(data / "pg", pg_port, durable=False)
        url = pg.start()
        started.append(pg)
        if fresh_database:
            import psycopg

            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres", autocommit=True) as c:
                c.execute("DROP DATABASE IF EXISTS handoff WITH (FORCE)")
                c.execute("CREATE DATABASE handoff")
        os.environ["DATABASE_URL"] = url
        say(f"PostgreSQL (embedded, fsync off) on 127.0.0.1:{pg_port}" + (": fresh database 'handoff'"
                                                                          if fresh_database else ""))
    if valkey_port is not None and not os.environ.get("REDIS_URL"):
        vk = EmbeddedValkey(data / "valkey", valkey_port, durable=False)
        os.environ["REDIS_URL"] = vk.start()
        started.append(vk)
        say(f"Valkey (embedded) on 127.0.0.1:{valkey_port}")
    return started


def stop_engines(started: list) -> None:
    """Close Django's database connections (a server with clients left stops slowly), then stop the engines."""
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # Django never configured: nothing to close
        pass
    for s in reversed(started):
        try:
            s.stop()
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {s}: {exc}", file=sys.stderr)
    started.clear()


def setup_django() -> dict:
    """Django with the local settings but DEBUG off (no query log: time what production does) and no sandboxes;
    migrated, with the reference data, the connections (to an address nothing listens on) and the roles. Returns
    the connections by slug."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("HANDOFF_SANDBOX_ENABLED", "0")
    import django

    django.setup()
    from django.contrib.auth.models import Group, Permission
    from django.core.management import call_command

    from apps.core.roles import define_roles
    from apps.demo.firm import setup_connections, setup_reference_data

    say("migrating")
    call_command("migrate", "--noinput", verbosity=0)
    setup_reference_data()
    connections = setup_connections("http://127.0.0.1:9")
    define_roles(Group, Permission)
    return connections


def bench_user(username: str, group: str, *, staff: bool = False):
    """The user a bench acts as, in one role's group (created once, kept across runs)."""
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username=username,
                                         defaults={"first_name": username.title(), "is_staff": staff})
    user.groups.set([Group.objects.get(name=group)])
    return user
