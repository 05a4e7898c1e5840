"""postgres -- a real PostgreSQL server from Debian's packages on a loopback
port, for the postgresql sink's tests, runners and benchmarks.

  PostgreSQL(directory).start()  initdb (first start only: superuser kwal,
                                 trust auth on loopback), then pg_ctl start
                                 on 127.0.0.1 and a free port (the same port
                                 on a restart); returns the libpq connection
                                 string, also written to DIRECTORY/conninfo
  .stop()                        pg_ctl stop -m fast (clients disconnected,
                                 data kept: start() again serves it)
  .kill()                        pg_ctl stop -m immediate (a crash: the next
                                 start recovers from PostgreSQL's WAL)
  .destroy()                     stop, then remove the data

The server's programs come from `pg_config --bindir` (libpq-dev), else the
newest /usr/lib/postgresql/*/bin. PostgreSQL refuses to run as root: under
root the data directory is made in /tmp (DIRECTORY may sit below a 0700
directory) owned by the `postgres` user the Debian package creates, and its
programs run as that user (runuser). Unix sockets are off; fsync stays on
unless fsync=False (unit tests, which never crash the server).
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from . import proc
from .kafka import free_port


class PostgresError(proc.HarnessError):
    pass


def bindir():
    """Where initdb, pg_ctl and psql are; PostgresError when nowhere."""
    try:
        r = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                           timeout=30)
        d = r.stdout.strip()
        if r.returncode == 0 and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    except OSError:
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    raise PostgresError("PostgreSQL's server programs are not installed (Debian: "
                        "postgresql; tools/install-deps.sh installs it)")


class PostgreSQL:
    USER = "kwal"

    def __init__(self, directory, fsync=True):
        self.dir = os.path.abspath(directory)
        self.fsync = fsync
        os.makedirs(self.dir, exist_ok=True)
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        self.port = None
        self._read_state()

    # -- state kept in DIRECTORY, so that another process (kwal-pg-local
    # stop) finds the server
    def _state(self, name):
        return os.path.join(self.dir, name)

    def _read_state(self):
        try:
            with open(self._state("pgdata")) as f:
                self.data = f.read().strip()
        except OSError:
            self.data = None
        try:
            with open(self._state("port")) as f:
                self.port = int(f.read().strip())
        except (OSError, ValueError):
            self.port = None

    def _write(self, name, text):
        tmp = self._state(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self._state(name))

    @property
    def conninfo(self):
        return "host=127.0.0.1 port=%d user=%s dbname=postgres" % (self.port, self.USER)

    def _run(self, argv, timeout=120):
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, "", "timed out after %d s" % timeout
        return r.returncode, r.stdout, r.stderr

    def _init(self):
        if self.as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root and there is no 'postgres' user to "
                                    "run the server as (Debian's postgresql package "
                                    "creates it)")
            top = tempfile.mkdtemp(prefix="kwal-pg-")
            os.chown(top, pw.pw_uid, pw.pw_gid)
            os.chmod(top, 0o700)
            data = os.path.join(top, "data")
        else:
            data = os.path.join(self.dir, "data")
        rc, out, err = self._run([os.path.join(self.bin, "initdb"), "-D", data, "-U",
                                  self.USER, "--auth=trust", "-E", "UTF8", "--no-sync",
                                  "--locale=C"])
        if rc != 0:
            raise PostgresError("initdb failed: %s" % (err.strip() or out.strip())[-800:])
        self.data = data
        self._write("pgdata", data)

    def start(self, timeout=60):
        """Start (initdb first when there is no data yet); the conninfo."""
        if self.data is None or not os.path.isdir(os.path.dirname(self.data)):
            self._init()
        if self.port is None:
            self.port = free_port()
            self._write("port", str(self.port))
        log = os.path.join(os.path.dirname(self.data), "server.log")
        opts = ("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c max_connections=200 -c fsync=%s" % (self.port, "on" if self.fsync else "off"))
        rc, out, err = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l",
                                  log, "-o", opts, "-w", "-t", str(timeout), "start"],
                                 timeout=timeout + 30)
        if rc != 0:
            raise PostgresError("pg_ctl start failed: %s; server log: %s"
                                % ((err.strip() or out.strip())[-400:], self.log_tail(5)))
        self._write("conninfo", self.conninfo + "\n")
        return self.conninfo

    def log_tail(self, n=5):
        if self.data is None:
            return ""
        try:
            with open(os.path.join(os.path.dirname(self.data), "server.log"),
                      errors="replace") as f:
                return " | ".join(ln.rstrip() for ln in f.readlines()[-n:])
        except OSError:
            return ""

    def running(self):
        if self.data is None:
            return False
        rc, _, _ = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "status"],
                             timeout=30)
        return rc == 0

    def _stop(self, mode):
        if self.data is None or not self.running():
            return
        rc, out, err = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m",
                                  mode, "-w", "stop"])
        if rc != 0:
            raise PostgresError("pg_ctl stop -m %s failed: %s"
                                % (mode, (err.strip() or out.strip())[-400:]))

    def stop(self):
        self._stop("fast")

    def kill(self):
        self._stop("immediate")

    def destroy(self):
        try:
            self._stop("immediate")
        finally:
            if self.data is not None:
                top = os.path.dirname(self.data) if self.as_root else self.data
                shutil.rmtree(top, ignore_errors=True)
            for name in ("pgdata", "port", "conninfo"):
                try:
                    os.unlink(self._state(name))
                except OSError:
                    pass
            self.data = None

    def psql(self, sql, timeout=60, dbname=None):
        """Run sql through psql (in dbname, default postgres); its rows as
        lists of strings (unaligned, tab-separated). PostgresError with
        psql's message on failure."""
        conninfo = self.conninfo if dbname is None else \
            self.conninfo.replace("dbname=postgres", "dbname=" + dbname)
        argv = [os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-F", "\t",
                "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PostgresError("psql timed out after %d s: %s" % (timeout, sql[:200]))
        if r.returncode != 0:
            raise PostgresError("psql: %s (%s)" % (r.stderr.strip()[-400:], sql[:200]))
        return [ln.split("\t") for ln in r.stdout.splitlines() if ln != ""]

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.psql("SELECT 1", timeout=10)
                return True
            except PostgresError:
                time.sleep(0.2)
        return False


class Database:
    """A database of its own on a running server: created (dropped first
    when it exists) by the constructor."""

    def __init__(self, server, name):
        self.server = server
        self.name = name
        server.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        server.psql('CREATE DATABASE "%s"' % name)
        self.conninfo = "host=127.0.0.1 port=%d user=%s dbname=%s" % (
            server.port, server.USER, name)

    def sql(self, q, timeout=60):
        """Rows of q, each a list of strings (NULL as '')."""
        return self.server.psql(q, timeout=timeout, dbname=self.name)

    def value(self, q):
        rows = self.sql(q)
        return rows[0][0] if rows and rows[0] else None
