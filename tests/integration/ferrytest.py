"""Ferry's integration test harness (Python 3 stdlib only).

Starts the real `ferry` binary ($FERRY_BIN) on ephemeral loopback ports in
front of scriptable backends (backend.py), drives it with raw sockets,
http.client or curl, and checks answers, backend-side heads, access-log
lines, descriptors, memory and the admin /status counters.

A test file is a standalone script:

    from ferrytest import *

    def test_something():
        "what it checks"
        be = backend()
        f = ferry(routes=[route("r", "/", upstream="u")], upstreams={"u": servers(be)})
        r = request(f, "GET", "/echo")
        expect_response(r, status=200, json={"path": "/echo"})

    if __name__ == "__main__":
        run(globals())

`run` executes every test_* function in file order (or those named on the
command line), prints what each checks, cleans every process it started up by
PID (also on failure, timeout or signal), and exits 0 (pass), 77 (skip) or
1 (fail), as automake expects. A watchdog kills everything and fails the
file if it runs longer than its budget, so a misbehaving ferry fails a test
and never hangs it.

Every ferry runs `workers: 2` unless the test says otherwise
($FERRY_TEST_WORKERS changes the default), so multi-worker behaviour is
exercised by default; a test whose check is per worker (pools, round
robin, max_connections, ejection, max_requests) says `workers=1`.

Declarative cases (in the spirit of HAProxy's .vtc files): see Case and
run_cases: a request, the expected status/headers/body, and checks on what
the backend received.
"""

import atexit
import hashlib
import http.client
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from backend import Backend, pattern, refused_address  # noqa: E402

FERRY_BIN = os.environ.get("FERRY_BIN", os.path.join(os.path.dirname(os.path.dirname(HERE)), "_build", "src", "ferry"))
FERRY_SRCDIR = os.environ.get("FERRY_SRCDIR", os.path.dirname(os.path.dirname(HERE)))
EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77
MiB = 1 << 20

__all__ = [
    "Backend", "BackendProcess", "Case", "Client", "Fail", "Ferry", "MiB", "Response", "Skip",
    "FERRY_BIN", "FERRY_SRCDIR", "backend", "backend_process", "check", "curl", "eq",
    "expect_closed", "expect_response", "ferry", "free_port", "header_names", "is_sanitized",
    "log", "parallel", "parse_response", "parse_responses", "pattern", "raw", "refused_address",
    "request", "route", "run", "run_cases", "run_ferry_cli", "servers", "sha256",
    "wait_until", "to_yaml", "respond_route", "timed", "build_request", "kill_pid", "tmpdir",
    "RawResult", "stopped", "crypt_hash",
]


# --- failures -------------------------------------------------------------------------------
class Fail(AssertionError):
    pass


class Skip(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def check(cond, msg):
    """Fails the test with msg unless cond is true."""
    if not cond:
        raise Fail(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Fail("%s: expected %r, got %r" % (what, expected, actual))


def raise_nofile(need):
    """Raises this process's soft RLIMIT_NOFILE to its hard limit when
    under `need` (ferry inherits it); skips when the hard limit is under."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise Skip("RLIMIT_NOFILE hard limit %d < %d (ulimit -Hn)" % (hard, need))
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_until(pred, timeout=5.0, interval=0.02, what=None):
    """Polls pred() until it returns a true value (returned) or timeout;
    then fails with `what` if given, else returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            if what:
                raise Fail("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, v))
            return v
        time.sleep(interval)


def _thread_states(pid):
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as fh:
                states.append(fh.read().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:  # a thread that just exited
            pass
    return states


class stopped:
    """with stopped(pid): the block runs while the process is stopped
    (SIGSTOP), SIGCONT after it. kill() only queues the signal: a thread
    already running would still accept a connection or read a socket, so
    the block starts once every thread is seen stopped."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: all(s == "T" for s in _thread_states(self.pid)),
                       what="every thread of %d stopped" % self.pid)
        except BaseException:
            os.kill(self.pid, signal.SIGCONT)
            raise
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)
        return False


def crypt_hash(password, prefix, cost):
    """A crypt(3) hash made by libxcrypt through ctypes (bcrypt: $2b$)."""
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(prefix.encode(), cost, None, 0)
    check(salt, "crypt_gensalt(%s) failed" % prefix)
    return lib.crypt(password.encode(), salt).decode()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def timed(fn, *a, **kw):
    """Returns (result, seconds)."""
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


# --- processes: every one is killed by its PID at the end -------------------------------------
_procs = []  # subprocess.Popen objects this process started
_cleanups = []  # per-test cleanups (callables), run after each test
_procs_lock = threading.Lock()


def _register(p):
    with _procs_lock:
        _procs.append(p)


def kill_pid(p, term_timeout=3.0):
    """SIGTERM the process by its PID, SIGKILL after term_timeout; reaps it.
    Returns its exit status (negative: signal)."""
    if p.poll() is not None:
        return p.returncode
    try:
        os.kill(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return p.wait(term_timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return p.wait(5)
        except subprocess.TimeoutExpired:
            return None


def _kill_all():
    with _procs_lock:
        procs = list(_procs)
    for p in procs:
        try:
            kill_pid(p, 1.0)
        except Exception:
            pass


atexit.register(_kill_all)


def _on_signal(signum, frame):
    _kill_all()
    os._exit(EXIT_FAIL)


for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


_handed_out = set()


def free_port():
    """A loopback port free right now, chosen below the kernel's ephemeral
    range so the many client connections of a test do not take it. A port
    is handed out once per test process: two free_port() calls before
    either port is bound (a listener and its admin) never get the same."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        _handed_out.add(port)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise Fail("no free port found")


_tmpdir = None


def tmpdir():
    global _tmpdir
    if _tmpdir is None:
        base = os.environ.get("FERRY_TEST_TMPDIR") or None
        _tmpdir = tempfile.mkdtemp(prefix="ferrytest-", dir=base)
    return _tmpdir


def is_sanitized():
    """True when FERRY_BIN was built with ASan (RSS and speed checks skip)."""
    try:
        with open(FERRY_BIN, "rb") as fh:
            return b"__asan_init" in fh.read()
    except OSError:
        return False


# --- YAML -------------------------------------------------------------------------------------
_PLAIN = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9_./:+-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.fullmatch(s) and s.lower() not in _YAML_WORDS and ": " not in s:
        return s
    return json.dumps(s)  # a JSON string is a valid double-quoted YAML scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (strings quoted only
    when they need it, so numbers in strings stay strings)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, k))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2).split("\n")
                out.append("%s- %s" % (pad, inner[0][indent + 2:]))
                out.extend(inner[1:])
            else:
                out.append("%s- %s" % (pad, _scalar(v) if not isinstance(v, (dict, list))
                                       else ("{}" if isinstance(v, dict) else "[]")))
    else:
        out.append(pad + _scalar(obj))
    return "\n".join(out)


# --- config helpers ---------------------------------------------------------------------------
def servers(*backends, weights=None, **upstream_keys):
    """An upstream dict for backends (Backend objects or "host:port" strings)."""
    lst = []
    for i, b in enumerate(backends):
        addr = b if isinstance(b, str) else b.address
        s = {"address": addr}
        if weights:
            s["weight"] = weights[i]
        lst.append(s)
    d = dict(upstream_keys)
    d["servers"] = lst
    return d


def route(name, path_prefix=None, upstream=None, **kw):
    """A route dict: route("api", "/v1/", upstream="api", strip_prefix="/v1",
    host="a.test", methods=["GET"], path="/exact")."""
    match = {}
    for key in ("host", "path", "path_regex", "methods", "headers"):
        if key in kw:
            match[key] = kw.pop(key)
    if path_prefix is not None:
        match["path_prefix"] = path_prefix
    r = {"name": name, "match": match}
    if upstream:
        r["upstream"] = upstream
    r.update(kw)
    return r


def respond_route(name, path_prefix, status=200, body="ok\n", content_type="text/plain", **kw):
    return route(name, path_prefix,
                 respond={"status": status, "body": body, "content_type": content_type}, **kw)


# --- Ferry ------------------------------------------------------------------------------------
class Ferry:
    """One ferry process with its own config file, ports and stderr file."""

    def __init__(self, config=None, yaml_text=None, admin=True, name="ferry", listener=None):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=tmpdir())
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.address = "127.0.0.1:%d" % self.port
        self.config_path = os.path.join(self.dir, "ferry.yaml")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.pid_file = os.path.join(self.dir, "ferry.pid")
        self.proc = None
        self.expect_exit = False
        if yaml_text is not None:
            text = yaml_text.format(port=self.port, admin_port=self.admin_port, dir=self.dir,
                                    pid_file=self.pid_file)
        else:
            cfg = {"workers": int(os.environ.get("FERRY_TEST_WORKERS", "2")), "pid_file": self.pid_file,
                   "listen": [dict({"address": self.address}, **(listener or {}))],
                   "access_log": {"path": "stderr", "format": "json"}}
            if admin:
                cfg["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
            for k, v in (config or {}).items():
                cfg[k] = v
            text = "# written by ferrytest.py\n" + to_yaml(cfg) + "\n"
        self.config_text = text
        with open(self.config_path, "w") as fh:
            fh.write(text)

    def write_config(self, config=None, yaml_text=None, listeners=None):
        """Rewrites the config file (not read until a reload): config's keys
        over the same defaults as the constructor's (listeners: the whole
        listen list), or yaml_text as given."""
        if yaml_text is None:
            cfg = {"workers": int(os.environ.get("FERRY_TEST_WORKERS", "2")),
                   "pid_file": self.pid_file,
                   "listen": listeners or [{"address": self.address}],
                   "access_log": {"path": "stderr", "format": "json"}}
            if self.admin_port:
                cfg["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
            cfg.update(config or {})
            yaml_text = "# written by ferrytest.py\n" + to_yaml(cfg) + "\n"
        self.config_text = yaml_text
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(yaml_text)
        os.rename(tmp, self.config_path)

    def reload_lines(self):
        return [ln for ln in self.stderr_text().splitlines() if "reload: " in ln]

    def reload(self, config=None, yaml_text=None, expect="applied", timeout=10.0, **kw):
        """Rewrites the config (when given), sends SIGHUP and waits for the
        reload's outcome line ("reload: ... applied" or "... keeping the
        running config"); returns it. Fails when it is not what expect says
        ("applied" or "keeping")."""
        if config is not None or yaml_text is not None or kw:
            self.write_config(config, yaml_text, **kw)
        n = len([ln for ln in self.reload_lines() if "applied" in ln or "keeping" in ln])
        os.kill(self.pid, signal.SIGHUP)

        def outcome():
            done = [ln for ln in self.reload_lines() if "applied" in ln or "keeping" in ln]
            return done[n] if len(done) > n else None
        line = wait_until(outcome, timeout)
        self.assert_alive()
        if not line:
            raise Fail("no reload outcome within %.0fs; stderr:\n%s" % (timeout, self.stderr_tail()))
        if expect and expect not in line:
            raise Fail("reload: expected %r, got: %s" % (expect, line))
        return line

    # lifecycle
    def start(self, timeout=10.0):
        """Starts ferry and waits until its listener (and admin) accept."""
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([FERRY_BIN, "-c", self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err, cwd=self.dir)
        _register(self.proc)
        _cleanups.append(self.stop)
        self.pid = self.proc.pid
        ports = [self.port] + ([self.admin_port] if self.admin_port else [])
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self.proc.poll() is not None:
                    raise Fail("ferry exited with status %s before accepting on port %d; "
                               "config:\n%s\nstderr:\n%s" % (self.proc.returncode, port,
                                                             self.config_text, self.stderr_tail()))
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise Fail("ferry (pid %d) does not accept on port %d after %.0fs; stderr:\n%s"
                               % (self.pid, port, timeout, self.stderr_tail()))
                time.sleep(0.02)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise Fail("ferry died: exit status %s (negative = signal); stderr:\n%s"
                       % (self.proc.returncode, self.stderr_tail()))

    def stop(self, timeout=5.0):
        """SIGTERM by PID, SIGKILL after timeout. Fails if ferry had already
        died on its own (a crash) unless expect_exit was set."""
        if self.proc is None:
            return None
        died = self.proc.poll()
        rc = kill_pid(self.proc, timeout)
        try:
            self._err.close()
        except Exception:
            pass
        p, self.proc = self.proc, None
        self.returncode = rc
        if died is not None and not self.expect_exit:
            raise Fail("ferry (pid %d) had died during the test: exit status %s; stderr:\n%s"
                       % (p.pid, died, self.stderr_tail()))
        # SIGTERM is a clean stop: exit status 0. Anything else is a crash
        # on the way out or, under the sanitizers, a leak or an error they
        # report at exit. (-9: it outlived the timeout and was killed, which
        # tests that leave requests in flight may cause on purpose.)
        if died is None and rc not in (0, -signal.SIGKILL, None) and not self.expect_exit:
            raise Fail("ferry (pid %d) exited with status %s after SIGTERM; stderr:\n%s"
                       % (p.pid, rc, self.stderr_tail()))
        return rc

    # observation
    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def access_log(self):
        """Every JSON access-log line (dicts having a "status" key) so far."""
        out = []
        for line in self.stderr_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and "status" in d:
                out.append(d)
        return out

    def wait_access(self, pred, timeout=5.0, what="an access-log line"):
        """Waits for an access-log entry for which pred(entry) is true."""
        def find():
            for e in self.access_log():
                if pred(e):
                    return e
            return None
        e = wait_until(find, timeout)
        if not e:
            raise Fail("no access-log line for %s within %.0fs; log tail:\n%s"
                       % (what, timeout, self.stderr_tail(20)))
        return e

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def fds(self):
        """{fd: link target} of the ferry process."""
        out = {}
        d = "/proc/%d/fd" % self.pid
        for fd in os.listdir(d):
            try:
                out[int(fd)] = os.readlink(os.path.join(d, fd))
            except OSError:
                pass
        return out

    def proc_status(self, key):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM) or as text."""
        with open("/proc/%d/status" % self.pid) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    v = line.split(":", 1)[1].strip()
                    return int(v.split()[0]) if v.endswith("kB") else v
        raise Fail("no %s in /proc/%d/status" % (key, self.pid))

    def rss_kb(self):
        return self.proc_status("VmRSS")

    def status(self, timeout=5.0):
        """GET /status on the admin listener, as a dict."""
        check(self.admin_port, "this ferry has no admin listener")
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request("GET", "/status")
            r = c.getresponse()
            body = r.read()
            eq(r.status, 200, "admin GET /status status")
            try:
                return json.loads(body)
            except ValueError:
                raise Fail("admin /status is not JSON: %r" % body[:200])
        finally:
            c.close()

    def live_coroutines(self):
        st = self.status()
        check("live_coroutines" in st, "admin /status has no live_coroutines: %r" % st)
        return st["live_coroutines"]

    def wait_baseline(self, fd_base, coro_base, timeout=5.0):
        """Waits until the fd count and live_coroutines are back at (or below)
        their baselines; fails naming what leaked."""
        last = {}

        def back():
            last["fd"] = self.fd_count()
            last["coro"] = self.live_coroutines() if self.admin_port else coro_base
            return last["fd"] <= fd_base and last["coro"] <= coro_base
        if not wait_until(back, timeout, 0.1):
            raise Fail("not back to baseline after %.0fs: fds %d (baseline %d), live_coroutines "
                       "%s (baseline %s); open fds: %r" % (timeout, last["fd"], fd_base,
                                                           last["coro"], coro_base, self.fds()))

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)


def ferry(config=None, routes=None, upstreams=None, start=True, **kw):
    """Makes (and by default starts) a Ferry; routes/upstreams and any other
    top-level key (timeouts=..., limits=..., workers=...) go in the config."""
    cfg = dict(config or {})
    if upstreams is not None:
        cfg["upstreams"] = upstreams
    if routes is not None:
        cfg["routes"] = routes
    admin = kw.pop("admin", True)
    listener = kw.pop("listener", None)  # more keys for the one listener
    cfg.update(kw)
    f = Ferry(cfg, admin=admin, listener=listener)
    if start:
        f.start()
    return f


def run_ferry_cli(args, timeout=10.0):
    """Runs FERRY_BIN with args; returns (exit status, stdout, stderr)."""
    try:
        p = subprocess.Popen([FERRY_BIN] + list(args), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise Fail("cannot run %s: %s" % (FERRY_BIN, e))
    _register(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_pid(p, 1.0)
        raise Fail("ferry %s did not exit within %.0fs" % (" ".join(args), timeout))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# --- backends ---------------------------------------------------------------------------------
def backend(name="backend"):
    """An in-process backend (threads), stopped after the test."""
    b = Backend(name=name).start()
    _cleanups.append(b.stop)
    return b


class BackendProcess:
    """backend.py as a subprocess (for loads where the test's own threads
    should not share a GIL with the backend); counters over HTTP."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "backend.py")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        _register(self.proc)
        _cleanups.append(self.stop)
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if r else ""
        m = re.match(r"listening (\d+)", line)
        if not m:
            kill_pid(self.proc)
            raise Fail("backend.py did not start: %r" % line)
        self.port = int(m.group(1))
        self.address = "127.0.0.1:%d" % self.port

    def _get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", path)
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def stats(self):
        """Counters (the stats request itself counts as one request and one connection)."""
        return self._get("/__stats")

    def requests(self):
        return self._get("/__requests")

    def stop(self):
        kill_pid(self.proc, 2.0)


def backend_process():
    return BackendProcess()


# --- HTTP responses ---------------------------------------------------------------------------
class Response:
    def __init__(self):
        self.version = ""
        self.status = None
        self.reason = ""
        self.headers = []  # [(name, value)] in order
        self.body = b""
        self.complete = False  # the framing said the body ended
        self.head_raw = b""
        self.framing = None  # "length", "chunked", "close", "none"
        self.trailers = []

    def header(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise Fail("response body is not JSON: %r" % self.body[:300])

    def __repr__(self):
        return "<Response %s %s headers=%r body=%r%s>" % (
            self.status, self.reason, self.headers, self.body[:200],
            "" if self.complete else " INCOMPLETE")


def header_names(headers):
    return [n.lower() for n, _ in headers]


def parse_response(buf, eof=False, head_request=False):
    """Parses one response from the start of buf. Returns (Response, bytes
    consumed), or (None, 0) when more bytes are needed. At eof, a partial
    body is returned with complete=False. 1xx interim answers are returned
    as responses of their own."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        if eof and buf:
            raise Fail("connection closed inside a response head: %r" % buf[:300])
        return None, 0
    r = Response()
    r.head_raw = buf[:i + 4]
    lines = buf[:i].split(b"\r\n")
    m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise Fail("bad status line: %r" % lines[0][:200])
    r.version = m.group(1).decode()
    r.status = int(m.group(2))
    r.reason = (m.group(3) or b"").decode("latin-1")
    for line in lines[1:]:
        n, sep, v = line.partition(b":")
        if not sep:
            raise Fail("bad response header line: %r" % line)
        r.headers.append((n.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
    pos = i + 4
    if head_request or 100 <= r.status < 200 or r.status in (204, 304):
        r.framing, r.complete = "none", True
        return r, pos
    te = (r.header("Transfer-Encoding") or "").lower()
    cl = r.header("Content-Length")
    if "chunked" in te:
        r.framing = "chunked"
        body = []
        while True:
            j = buf.find(b"\r\n", pos)
            if j < 0:
                break
            try:
                size = int(buf[pos:j].split(b";")[0].strip(), 16)
            except ValueError:
                raise Fail("bad chunk size line: %r" % buf[pos:j][:100])
            if size == 0:
                k = j + 2
                while True:
                    e = buf.find(b"\r\n", k)
                    if e < 0:
                        break
                    if e == k:
                        r.body = b"".join(body)
                        r.complete = True
                        return r, e + 2
                    n, _, v = buf[k:e].partition(b":")
                    r.trailers.append((n.decode("latin-1"), v.strip().decode("latin-1")))
                    k = e + 2
                break
            if len(buf) < j + 2 + size + 2:
                body.append(buf[j + 2:j + 2 + size])
                break
            body.append(buf[j + 2:j + 2 + size])
            pos = j + 2 + size + 2
        if not eof:
            return None, 0
        r.body = b"".join(body)
        return r, len(buf)
    if cl is not None:
        r.framing = "length"
        n = int(cl)
        if len(buf) - pos >= n:
            r.body = buf[pos:pos + n]
            r.complete = True
            return r, pos + n
        if not eof:
            return None, 0
        r.body = buf[pos:]
        return r, len(buf)
    r.framing = "close"
    if not eof:
        return None, 0
    r.body = buf[pos:]
    r.complete = True
    return r, len(buf)


def parse_responses(buf, eof=True, head_requests=()):
    """Every response in buf (pipelined answers); head_requests is the set of
    indexes of HEAD requests. Skips nothing: 1xx answers appear in the list."""
    out = []
    while buf:
        r, used = parse_response(buf, eof, head_request=len(out) in head_requests)
        if r is None:
            break
        out.append(r)
        buf = buf[used:]
    return out


class Client:
    """A raw keep-alive client connection: send bytes, read whole responses,
    see whether the server closed."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.reset = False

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode("latin-1"))

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            self.reset = True
            data = b""
        except socket.timeout:
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def response(self, timeout=None, head_request=False):
        """Reads one response; fails on timeout. A response cut by EOF comes
        back with complete=False."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            r, used = parse_response(self.buf, self.eof, head_request)
            if r is not None:
                self.buf = self.buf[used:]
                return r
            if self.eof:
                raise Fail("connection closed before a response (got %r)" % self.buf[:200])
            if not self._fill(deadline) and not self.eof:
                raise Fail("no complete response within %.1fs (got %d bytes: %r)"
                           % (timeout or self.timeout, len(self.buf), self.buf[:200]))

    def request(self, method, path, headers=None, body=b"", host="test.local", timeout=None):
        self.send(build_request(method, path, headers, body, host))
        return self.response(timeout, head_request=(method == "HEAD"))

    def closed(self, timeout=2.0):
        """True if the server closes the connection within timeout (bytes
        that arrive meanwhile are kept in buf)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline) and not self.eof:
                return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def build_request(method, path, headers=None, body=b"", host="test.local"):
    """Request bytes; adds Host (unless given or host is None) and
    Content-Length for a non-empty body (unless Transfer-Encoding or
    Content-Length is given)."""
    if isinstance(body, str):
        body = body.encode()
    hdrs = list(headers.items() if isinstance(headers, dict) else (headers or []))
    names = header_names(hdrs)
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % (n, v) for n, v in hdrs)
    return head.encode("latin-1") + b"\r\n" + body


class RawResult:
    def __init__(self, data, how, responses):
        self.data = data  # every byte received
        self.how = how  # "eof", "reset" or "timeout" (server still open)
        self.responses = responses

    @property
    def response(self):
        if not self.responses:
            raise Fail("no response at all (ended by %s; got %r)" % (self.how, self.data[:300]))
        return self.responses[0]


def _port(target):
    return target.port if hasattr(target, "port") else int(target)


def raw(target, data, timeout=5.0, shut_wr=False, head_requests=()):
    """Sends data on a fresh connection and reads until the server closes or
    timeout; returns a RawResult with the parsed (possibly pipelined)
    responses."""
    s = socket.create_connection(("127.0.0.1", _port(target)), timeout=timeout)
    try:
        s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        how = "timeout"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            try:
                chunk = s.recv(262144)
            except ConnectionResetError:
                how = "reset"
                break
            if not chunk:
                how = "eof"
                break
            buf += chunk
        return RawResult(buf, how, parse_responses(buf, eof=True, head_requests=head_requests))
    finally:
        s.close()


def request(target, method, path, headers=None, body=None, timeout=10.0, host=None):
    """One request with http.client on a new connection; returns a Response
    (body read fully). A transport failure fails the test with its reason."""
    c = http.client.HTTPConnection("127.0.0.1", _port(target), timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if host is not None:
            hdrs["Host"] = host
        c.request(method, path, body=body, headers=hdrs)
        hr = c.getresponse()
        r = Response()
        r.version = "HTTP/1.1" if hr.version == 11 else "HTTP/1.0"
        r.status, r.reason = hr.status, hr.reason
        r.headers = list(hr.getheaders())
        try:
            r.body = hr.read()
            r.complete = True
        except http.client.IncompleteRead as e:
            r.body = e.partial
        return r
    except (OSError, http.client.HTTPException) as e:
        raise Fail("%s %s: %s: %s" % (method, path, type(e).__name__, e))
    finally:
        c.close()


def curl(*args, timeout=30.0):
    """Runs curl -sS with args; returns (exit status, stdout bytes, stderr)."""
    p = subprocess.Popen(["curl", "-sS", "--max-time", str(int(timeout))] + list(args),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _register(p)
    try:
        out, err = p.communicate(timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        kill_pid(p, 1.0)
        raise Fail("curl %r hung" % (args,))
    return p.returncode, out, err.decode("utf-8", "replace")


def expect_closed(client, timeout=3.0, what="the connection"):
    check(client.closed(timeout), "%s was not closed by ferry within %.0fs" % (what, timeout))


def _match(actual, expected):
    if hasattr(expected, "search"):
        return actual is not None and expected.search(actual) is not None
    if callable(expected):
        return expected(actual)
    return actual == expected


def _subset(actual, expected, path="json"):
    if isinstance(expected, dict):
        check(isinstance(actual, dict), "%s: expected an object, got %r" % (path, actual))
        for k, v in expected.items():
            check(k in actual, "%s: no key %r in %r" % (path, k, actual))
            _subset(actual[k], v, "%s.%s" % (path, k))
    else:
        check(_match(actual, expected), "%s: expected %r, got %r" % (path, expected, actual))


def expect_response(r, status=None, headers=None, body=None, body_contains=None, json=None,
                    complete=True, what="response"):
    """Checks a Response. headers: {name: value | regex | callable | None
    (must be absent)}; json: a subset that the JSON body must contain
    (values may be regexes or callables)."""
    if status is not None:
        check(r.status == status, "%s: status %s, expected %s (%r)" % (what, r.status, status, r))
    for name, v in (headers or {}).items():
        actual = r.header(name)
        if v is None:
            check(actual is None, "%s: header %s should be absent, is %r" % (what, name, actual))
        else:
            check(_match(actual, v), "%s: header %s is %r, expected %r" % (what, name, actual, v))
    if complete:
        check(r.complete, "%s: body cut short (%d bytes): %r" % (what, len(r.body), r))
    if body is not None:
        b = body.encode() if isinstance(body, str) else body
        check(r.body == b, "%s: body %r, expected %r" % (what, r.body[:300], b[:300]))
    if body_contains is not None:
        b = body_contains.encode() if isinstance(body_contains, str) else body_contains
        check(b in r.body, "%s: body %r does not contain %r" % (what, r.body[:300], b))
    if json is not None:
        _subset(r.json(), json)
    return r


def parallel(n, fn, timeout=30.0):
    """Runs fn(i) for i in range(n) in n threads; returns the list of results
    (an exception object where fn raised). Fails if a thread outlives timeout."""
    results = [None] * n

    def body(i):
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: B902 -- reported to the caller
            results[i] = e
    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(1 for t in threads if t.is_alive())
    check(alive == 0, "%d of %d threads still running after %.0fs" % (alive, n, timeout))
    return results


# --- declarative cases ------------------------------------------------------------------------
class Case:
    """One request and what must come of it.

    name      what is checked (printed)
    method, path, headers, body, host
              the request (sent with raw sockets; or `raw` bytes as is)
    status, resp_headers, resp_body, body_contains, json
              the expected answer (see expect_response)
    upstream  what the backend must have received: a dict with any of
              path/target/method (exact or regex), headers {name: value |
              regex | None = absent}, body; or a callable(Request); or
              False = the backend must receive nothing
    backend   the Backend the upstream check applies to
    """

    def __init__(self, name, method="GET", path="/", headers=None, body=b"", host="test.local",
                 raw=None, status=None, resp_headers=None, resp_body=None, body_contains=None,
                 json=None, upstream=None, backend=None, timeout=5.0):
        self.__dict__.update(locals())
        del self.__dict__["self"]


def _check_upstream(case, before):
    b = case.backend
    exp = case.upstream
    if exp is None:
        return
    if exp is False:
        n = b.stats()["requests"]
        check(n == before, "%s: the backend received %d request(s), expected none"
              % (case.name, n - before))
        return
    req = b.wait_for(lambda be: be.stats()["requests"] > before and be.last(), 2.0)
    check(req and b.stats()["requests"] > before,
          "%s: the backend received no request" % case.name)
    if callable(exp):
        exp(req)
        return
    for key in ("path", "target", "method", "version"):
        if key in exp:
            check(_match(getattr(req, key), exp[key]), "%s: upstream %s is %r, expected %r"
                  % (case.name, key, getattr(req, key), exp[key]))
    for name, v in exp.get("headers", {}).items():
        actual = req.header(name)
        if v is None:
            check(actual is None, "%s: upstream header %s should be absent, is %r (head: %r)"
                  % (case.name, name, actual, req.head_raw))
        else:
            check(_match(actual, v), "%s: upstream header %s is %r, expected %r (head: %r)"
                  % (case.name, name, actual, v, req.head_raw))
    if "body" in exp:
        eb = exp["body"].encode() if isinstance(exp["body"], str) else exp["body"]
        check(req.body == eb, "%s: upstream body %r, expected %r" % (case.name, req.body[:200],
                                                                      eb[:200]))


def run_cases(f, cases):
    """Runs each Case against ferry f on a fresh connection; stops at the
    first failure with a message naming the case."""
    for c in cases:
        log("  - " + c.name)
        before = c.backend.stats()["requests"] if c.backend else 0
        data = c.raw if c.raw is not None else build_request(c.method, c.path, c.headers,
                                                             c.body, c.host)
        cl = Client(f.port, c.timeout)
        try:
            cl.send(data)
            r = cl.response(c.timeout, head_request=(c.method == "HEAD"))
            cl._fill(time.monotonic() + 0.05)
            check(not cl.buf, "%s: unexpected bytes after the response: %r"
                  % (c.name, cl.buf[:200]))
        finally:
            cl.close()
        expect_response(r, status=c.status, headers=c.resp_headers, body=c.resp_body,
                        body_contains=c.body_contains, json=c.json, what=c.name)
        if c.backend is not None:
            _check_upstream(c, before)


# --- the runner -------------------------------------------------------------------------------
def _watchdog(budget):
    def fire():
        log("FAIL: the test file exceeded its %.0fs budget; killing everything" % budget)
        _kill_all()
        sys.stdout.flush()
        os._exit(EXIT_FAIL)
    t = threading.Timer(budget, fire)
    t.daemon = True
    t.start()


def _run_cleanups():
    errors = []
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:
            errors.append(e)
    return errors


def run(namespace, budget=60.0, needs_ferry=True):
    """Runs the test_* functions of namespace (a module's globals()) in file
    order, or those named in sys.argv; exits 0, 1 or 77."""
    names = [n for n, v in namespace.items() if n.startswith("test_") and callable(v)]
    if len(sys.argv) > 1:
        names = [n for n in names if n in sys.argv[1:]]
    if needs_ferry and not os.access(FERRY_BIN, os.X_OK):
        log("SKIP: no ferry binary at %s (set FERRY_BIN)" % FERRY_BIN)
        sys.exit(EXIT_SKIP)
    _watchdog(budget)
    failed, skipped, passed = [], [], []
    for n in names:
        fn = namespace[n]
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        log("== %s: %s" % (n, doc))
        t0 = time.monotonic()
        try:
            fn()
            errs = _run_cleanups()
            if errs:
                raise errs[0]
            passed.append(n)
            log("   ok (%.2fs)" % (time.monotonic() - t0))
        except Skip as e:
            _run_cleanups()
            skipped.append(n)
            log("   SKIP: %s" % e)
        except Exception as e:
            if isinstance(e, Fail):
                log("   FAIL: %s" % e)
            else:
                log("   FAIL: %s" % "".join(traceback.format_exception(type(e), e,
                                                                       e.__traceback__)))
            for err in _run_cleanups():
                log("   (also: %s)" % err)
            failed.append(n)
    _kill_all()
    log("%d passed, %d failed, %d skipped%s" % (len(passed), len(failed), len(skipped),
                                                ": " + " ".join(failed) if failed else ""))
    if _tmpdir is not None:
        if failed:
            log("configs and ferry stderr kept in %s" % _tmpdir)
        else:
            shutil.rmtree(_tmpdir, ignore_errors=True)
    if failed:
        sys.exit(EXIT_FAIL)
    if skipped and not passed:
        sys.exit(EXIT_SKIP)
    sys.exit(EXIT_PASS)


# --- added for the abuse tests (issue 6) ------------------------------------------------------
def ferry_under(prefix, config=None, routes=None, upstreams=None, **kw):
    """Like ferry(), but starts FERRY_BIN under a command prefix that execs
    it (["prlimit", "--nofile=256:256"]), so f.pid is still ferry's PID."""
    global FERRY_BIN
    import shlex
    f = ferry(config, routes, upstreams, start=False, **kw)
    wrapper = os.path.join(f.dir, "ferry-under")
    with open(wrapper, "w") as fh:
        fh.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(shlex.quote(a) for a in prefix),
                                                    shlex.quote(FERRY_BIN)))
    os.chmod(wrapper, 0o755)
    real = FERRY_BIN
    FERRY_BIN = wrapper
    try:
        f.start()
    finally:
        FERRY_BIN = real
    return f


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


__all__ += ["ferry_under", "cpu_seconds", "raise_nofile"]
