"""Running poolscope's bootstrap inside another, live CPython process.

``run_request(pid, request)`` writes the request to a private directory, gets one
statement executed in the target's main thread (see ``instrument/.../bootstrap.py``) and
waits for the result file the bootstrap writes. How the statement gets there:

* CPython 3.14+: ``sys.remote_exec(pid, script)`` (PEP 768), run by the target's own
  interpreter binary; it executes at the target's next safe point.
* 3.10-3.13: a debugger in batch mode (lldb, then gdb), stopping the process once per
  attempt for as short as it can. On the main thread it checks ``PyGILState_Check()``:
  - the thread holds the GIL (it is running Python code): the statement is copied into
    a fresh ``mmap`` page (no ``malloc``, which the thread may be inside) and queued with
    ``Py_AddPendingCall(PyRun_SimpleString, page)``; the interpreter runs it between two
    bytecodes, a safe point, as soon as the process continues;
  - the thread waits outside the interpreter (``time.sleep``, ``select``, a blocking
    read): ``PyGILState_Ensure`` + ``PyRun_SimpleString`` + ``PyGILState_Release`` run it
    there and then, as memray's attach does.
  A thread busy in a long C call that holds the GIL reaches no safe point: a second
  attempt is made halfway through the timeout, then the request is withdrawn (its
  deadline passes and its files are removed, so a queued call that runs later does
  nothing) and the error says so.

Every failure is an ``InjectError`` carrying one line for the user.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Debuggers tried in order (lldb first: Debian's gdb 13 fails its inferior calls on some
#: CPUs, "Couldn't write extended state status").
LLDB_NAMES = ("lldb-16", "lldb", "lldb-19", "lldb-18", "lldb-17", "lldb-15", "lldb-14")
GDB_NAMES = ("gdb",)
CAP_SYS_PTRACE = 19
DEFAULT_TIMEOUT = 15.0
#: The bootstrap statement must fit the one page mapped for it.
PAGE = 4096
#: How long the debugger lets its call run. Never the user's --timeout: a debugger that
#: gives up on a call unwinds the thread out of the middle of PyRun_SimpleString, which
#: would leave the interpreter broken. The call itself is short (a pending call is
#: queued in microseconds; the bootstrap run directly takes milliseconds), so this only
#: bounds a pathological case.
EXPR_TIMEOUT = 120.0


class InjectError(Exception):
    """Injection failed; the message is one line for the user."""


@dataclass
class Target:
    pid: int
    exe: str
    version: tuple[int, int]


# -- the target: alive, ours, traceable, CPython 3.10+ ---------------------------------


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _uid_of(pid: int) -> int | None:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def has_cap_sys_ptrace() -> bool:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    return False


def ptrace_scope() -> int | None:
    text = _read("/proc/sys/kernel/yama/ptrace_scope").strip()
    return int(text) if text.isdigit() else None


def ptrace_refusal(
    scope: int | None, has_cap: bool, same_user: bool, user: str = "another user"
) -> str | None:
    """Why the kernel will refuse to let this process trace the target, or None."""
    if not same_user:
        return (
            f"the target belongs to {user}: poolscope injects only into your own processes "
            f"(run it as that user: sudo -u {user} poolscope inject PID)"
        )
    if scope == 3:
        return (
            "ptrace is disabled on this machine (kernel.yama.ptrace_scope=3, until reboot); "
            "start the application under `poolscope run` instead"
        )
    if scope == 2 and not has_cap:
        return (
            "ptrace refused: kernel.yama.ptrace_scope=2 allows it only with CAP_SYS_PTRACE "
            "(run poolscope inject as root, or `sudo sysctl kernel.yama.ptrace_scope=1`)"
        )
    if scope == 1 and not has_cap:
        return (
            "ptrace refused: kernel.yama.ptrace_scope=1 lets a process trace only its own "
            "children (`sudo sysctl kernel.yama.ptrace_scope=0`, or give poolscope "
            "CAP_SYS_PTRACE: sudo setcap cap_sys_ptrace+ep on the debugger)"
        )
    return None


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return f"uid {uid}"


def _python_version(pid: int, exe: str) -> tuple[int, int] | None:
    maps = _read(f"/proc/{pid}/maps")
    m = re.search(r"libpython(\d+)\.(\d+)", maps)
    if m:
        return int(m.group(1)), int(m.group(2))
    base = os.path.basename(exe)
    m = re.fullmatch(r"python(\d+)\.(\d+)[a-z]*", base)
    if m:
        return int(m.group(1)), int(m.group(2))
    if not base.startswith("python"):
        return None
    try:
        out = subprocess.run(
            [
                exe,
                "-I",
                "-S",
                "-c",
                "import sys;print(sys.implementation.name,*sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) == 3 and out[0] == "cpython":
        return int(out[1]), int(out[2])
    return None


def inspect_target(pid: int) -> Target:
    """The target's interpreter, or an InjectError saying why it cannot be injected."""
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        raise InjectError(f"no process with pid {pid}")
    if pid == os.getpid():
        raise InjectError("cannot inject into poolscope itself")
    uid = _uid_of(pid)
    if uid is None:
        raise InjectError(f"no process with pid {pid}")
    why = ptrace_refusal(ptrace_scope(), has_cap_sys_ptrace(), uid == os.geteuid(), _user_name(uid))
    if why:
        raise InjectError(why)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        raise InjectError(f"cannot read pid {pid}'s executable: {exc.strerror}") from None
    version = _python_version(pid, exe)
    if version is None:
        base = os.path.basename(exe)
        what = "a PyPy process" if base.startswith("pypy") else f"a CPython process ({exe})"
        raise InjectError(f"pid {pid} is not {what}; poolscope inject needs CPython 3.10+")
    if os.path.basename(exe).startswith("pypy"):
        raise InjectError(f"pid {pid} is a PyPy process; poolscope inject needs CPython 3.10+")
    if version < (3, 10):
        raise InjectError(
            f"pid {pid} runs Python {version[0]}.{version[1]}, which poolscope does not "
            "support (CPython 3.10 or later)"
        )
    return Target(pid, exe, version)


def remote_debug_disabled(pid: int) -> str | None:
    """How remote debugging is disabled in a 3.14+ target, or None."""
    environ = _read(f"/proc/{pid}/environ").split("\0")
    for item in environ:
        if item.startswith("PYTHON_DISABLE_REMOTE_DEBUG=") and item.partition("=")[2]:
            return "PYTHON_DISABLE_REMOTE_DEBUG is set in its environment"
    argv = _read(f"/proc/{pid}/cmdline").split("\0")
    for i, arg in enumerate(argv):
        if arg == "-Xdisable-remote-debug" or (
            arg == "-X" and i + 1 < len(argv) and argv[i + 1] == "disable-remote-debug"
        ):
            return "it was started with -X disable-remote-debug"
    return None


# -- the statement and its transport -------------------------------------------------


def bootstrap_path() -> str:
    import poolscope.instrument.bootstrap as bootstrap

    return os.path.abspath(bootstrap.__file__)


def instrument_root() -> str:
    """The sys.path entry that makes this poolscope's in-app side importable."""
    import poolscope.instrument as ps

    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ps.__file__))))


def statement(request_file: str) -> str:
    """What runs in the target: exec the bootstrap file, never raise, bind no name."""
    boot = bootstrap_path()
    return (
        "try:\n"
        f" exec(compile(open({boot!r}).read(), {boot!r}, 'exec'), "
        f"{{'__name__': '_poolscope_bootstrap', 'REQUEST': {request_file!r}}})\n"
        "except BaseException:\n"
        " pass\n"
    )


def c_string(text: str) -> str:
    """``text`` as a C string literal (for the debugger's expression parser)."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            raise InjectError(f"unexpected character {ch!r} in a path poolscope would inject")
    return '"' + "".join(out) + '"'


# Result codes of one debugger attempt.
DIRECT_OK, DIRECT_FAILED, QUEUED, QUEUE_FAILED = 0, -1, 100, 99

_LLDB_EXPR = (
    # Names prefixed: the expression sees the stopped frame's locals (a libc "r" ...).
    "int ps_r = 99; char *ps_p = (char*)((void*(*)(void*, unsigned long, int, int, int, long))"
    "mmap)(0, {page}, 3, 0x22, -1, 0); const char *ps_s = {code}; "
    "for (int ps_i = 0; ps_s[ps_i]; ps_i++) ps_p[ps_i] = ps_s[ps_i]; ps_p[{n}] = 0; "
    "if (((int(*)(void))PyGILState_Check)() == 0) {{ "
    "int ps_g = ((int(*)(void))PyGILState_Ensure)(); "
    "ps_r = ((int(*)(const char*))PyRun_SimpleString)(ps_p); "
    "((void(*)(int))PyGILState_Release)(ps_g); }} "
    "else {{ ps_r = 100 + ((int(*)(void*, void*))Py_AddPendingCall)($ps_run, (void*)ps_p); }} "
    "ps_r"
)

_GDB_SCRIPT = """set pagination off
set confirm off
thread 1
set $ps_p = (char*)mmap(0, {page}, 3, 0x22, -1, 0)
set {{char[{size}]}}$ps_p = {code}
if (int)PyGILState_Check() == 0
  set $ps_g = (int)PyGILState_Ensure()
  set $ps_r = (int)PyRun_SimpleString($ps_p)
  call (void)PyGILState_Release($ps_g)
  printf "POOLSCOPE-RESULT %d\\n", $ps_r
else
  set $ps_q = (int)Py_AddPendingCall((int(*)(void*))PyRun_SimpleString, (void*)$ps_p)
  printf "POOLSCOPE-RESULT %d\\n", 100 + $ps_q
end
detach
quit
"""


@dataclass
class Attempt:
    debugger: str
    code: int | None  # one of the result codes, None when the debugger failed
    output: str
    seconds: float  # how long the process was stopped (sampled from /proc)


#: Less for lldb to load while the target is stopped (measured: about half the pause).
_LLDB_FAST = (
    "settings set target.preload-symbols false",
    "settings set symbols.enable-external-lookup false",
    "settings set target.load-script-from-symbol-file false",
    "settings set plugin.jit-loader.gdb.enable off",
)


#: The functions the debugger calls in the target, and where this process finds them.
_CALLED = (
    "mmap",
    "PyGILState_Check",
    "PyGILState_Ensure",
    "PyRun_SimpleString",
    "PyGILState_Release",
    "Py_AddPendingCall",
)


def _mappings(pid: int | str) -> list[tuple[int, int, int, str]]:
    """(start, end, file offset, path) of the file-backed mappings of a process."""
    rows = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                rows.append((lo, hi, int(parts[2], 16), parts[5].strip()))
    return rows


def symbol_addresses(pid: int) -> dict[str, int] | None:
    """The target's addresses of the functions the debugger calls, when it runs the same
    interpreter and libc files as this process: found here through ctypes, then moved to
    the target's mappings of the same files. Calling by address spares lldb the symbol
    lookup it now and then gets wrong while the target sits in a C call (``use of
    undeclared identifier 'PyRun_SimpleString'``). None when any one cannot be placed."""
    try:
        mine, theirs = _mappings("self"), _mappings(pid)
        libc = ctypes.CDLL(None)
        found: dict[str, int] = {}
        for name in _CALLED:
            lib = libc if name == "mmap" else ctypes.pythonapi
            here = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            if here is None:
                return None
            spot = next(
                ((off + here - lo, path) for lo, hi, off, path in mine if lo <= here < hi), None
            )
            if spot is None:
                return None
            file_off, path = spot
            there = next(
                (
                    lo + file_off - off
                    for lo, hi, off, p in theirs
                    if p == path and off <= file_off < off + (hi - lo)
                ),
                None,
            )
            if there is None:
                return None
            found[name] = there
        return found
    except (OSError, AttributeError, ValueError):
        return None


def _by_address(expr: str, addresses: dict[str, int] | None) -> str:
    """``expr`` with each called function named by its address in the target."""
    if not addresses:
        return expr
    for name, addr in addresses.items():
        expr = re.sub(rf"&?(?<![\w$]){name}\b", f"(void*){addr:#x}", expr)
    return expr


def _lldb_attempt(path: str, pid: int, stmt: str, timeout: float, fast: bool = True) -> Attempt:
    addresses = symbol_addresses(pid)
    expr = _by_address(
        _LLDB_EXPR.format(page=PAGE, code=c_string(stmt), n=len(stmt.encode())), addresses
    )
    cmd = [path, "--batch", "--no-lldbinit"]
    for setting in _LLDB_FAST if fast else ():
        cmd += ["-O", setting]
    exe = ""
    if not fast:
        with contextlib.suppress(OSError):
            exe = os.readlink(f"/proc/{pid}/exe")
    if exe:
        # The executable named up front: its symbols are loaded before the attach.
        cmd += ["--file", exe, "-o", f"process attach --pid {pid}"]
    else:
        cmd += ["-p", str(pid)]
    cmd += [
        "-o",
        "thread select 1",
        "-o",
        "expr -l c -- void *$ps_run = "
        + _by_address("(void*)&PyRun_SimpleString", addresses)
        + "; $ps_run",
        "-o",
        f"expr -l c -t {int(EXPR_TIMEOUT * 1e6)} -- {expr}",
        "-o",
        "process detach",
    ]
    with StopMeter(pid) as meter:
        out = _run_debugger(cmd, EXPR_TIMEOUT + 30)
    seconds = meter.stopped
    values = re.findall(r"^\(int\) \$\d+ = (-?\d+)\s*$", out, re.M)
    code = int(values[-1]) if values and "$ps_run" in out else None
    return Attempt("lldb", code, out, seconds)


def _gdb_attempt(path: str, pid: int, stmt: str, timeout: float) -> Attempt:
    size = len(stmt.encode()) + 1
    script = _GDB_SCRIPT.format(page=PAGE, size=size, code=c_string(stmt))
    fd, script_path = tempfile.mkstemp(prefix="poolscope-gdb-", suffix=".gdb")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(script)
        cmd = [path, "-nx", "--batch", "-p", str(pid), "-x", script_path]
        with StopMeter(pid) as meter:
            out = _run_debugger(cmd, EXPR_TIMEOUT + 30)
        seconds = meter.stopped
    finally:
        os.unlink(script_path)
    m = re.findall(r"POOLSCOPE-RESULT (-?\d+)", out)
    return Attempt("gdb", int(m[-1]) if m else None, out, seconds)


class StopMeter:
    """How long the target's main thread spends stopped by the debugger (state ``t`` in
    /proc/PID/stat, sampled every millisecond while the debugger runs): the pause the
    application sees, apart from the debugger's own start-up, which does not stop it."""

    def __init__(self, pid: int) -> None:
        self.path = f"/proc/{pid}/stat"
        self.stopped = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _state(self) -> str:
        text = _read(self.path)
        return text.rpartition(") ")[2][:1]

    def _run(self) -> None:
        last = time.monotonic()
        was = self._state() in ("t", "T")
        while not self._done.wait(0.001):
            now = time.monotonic()
            stopped = self._state() in ("t", "T")
            if was or stopped:
                self.stopped += now - last
            was, last = stopped, now

    def __enter__(self) -> StopMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(1.0)


def _run_debugger(cmd: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        return (out.decode(errors="replace") if isinstance(out, bytes) else out) + "\n(timed out)"
    except OSError as exc:
        return f"error: cannot run {cmd[0]}: {exc.strerror}"
    return proc.stdout + proc.stderr


def debuggers() -> list[tuple[str, str]]:
    """(kind, path) of the debuggers installed, in the order they are tried."""
    found: list[tuple[str, str]] = []
    for name in LLDB_NAMES:
        path = shutil.which(name)
        if path and ("lldb", path) not in found:
            found.append(("lldb", path))
            break
    for name in GDB_NAMES:
        path = shutil.which(name)
        if path:
            found.append(("gdb", path))
    return found


def _attach_refused(output: str) -> bool:
    text = output.lower()
    return "operation not permitted" in text or ("ptrace" in text and "denied" in text)


#: lldb failures that a fresh session usually does not repeat (seen here under load).
_LLDB_TRANSIENT = ("undeclared identifier", "Execution was interrupted")


def _one_attempt(target: Target, stmt: str, timeout: float, tried: list[str]) -> Attempt:
    """Try each debugger until one reports what it did."""
    available = debuggers()
    if not available:
        raise InjectError(
            "no usable debugger: install lldb (Debian/Ubuntu: apt install lldb-16) or gdb"
        )
    failures: list[str] = []
    for kind, path in available:
        attempt = (_lldb_attempt if kind == "lldb" else _gdb_attempt)(
            path, target.pid, stmt, timeout
        )
        for _ in range(2):
            if kind != "lldb" or attempt.code is not None:
                break
            if not any(m in attempt.output for m in _LLDB_TRANSIENT):
                break
            # Now and then lldb misses the interpreter's symbols (seen here about one
            # attach in ten under load, never twice running): again, loading them all.
            time.sleep(0.2)
            attempt = _lldb_attempt(path, target.pid, stmt, timeout, fast=False)
        if attempt.code is not None:
            return attempt
        if _attach_refused(attempt.output):
            raise InjectError(
                f"ptrace refused attaching to pid {target.pid} ({os.path.basename(path)}: "
                "Operation not permitted); in a container, add CAP_SYS_PTRACE "
                "(docker run --cap-add=SYS_PTRACE), or check kernel.yama.ptrace_scope"
            )
        failures.append(f"{os.path.basename(path)}: {_last_error(attempt.output)}")
        tried.append(os.path.basename(path))
    raise InjectError(
        "no usable debugger could run code in the target (" + "; ".join(failures) + ")"
    )


def _last_error(output: str) -> str:
    lines = [
        ln.strip()
        for ln in output.splitlines()
        if "error" in ln.lower() or "couldn't" in ln.lower()
    ]
    return (lines[-1] if lines else (output.strip().splitlines() or ["no output"])[-1])[:160]


def _remote_exec(target: Target, script: str, timeout: float) -> Attempt:
    """3.14+: the target's own interpreter calls ``sys.remote_exec`` (PEP 768)."""
    why = remote_debug_disabled(target.pid)
    if why:
        raise InjectError(
            f"remote debugging is disabled in pid {target.pid} ({why}); restart it without, "
            "or start it under `poolscope run`"
        )
    code = f"import sys; sys.remote_exec({target.pid}, {script!r})"
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [target.exe, "-I", "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InjectError(f"sys.remote_exec failed: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        if "PermissionError" in last or "Operation not permitted" in last:
            raise InjectError(
                f"ptrace refused for pid {target.pid}: {last}; check kernel.yama.ptrace_scope "
                "and CAP_SYS_PTRACE"
            )
        if "disable" in last.lower() and "remote" in last.lower():
            raise InjectError(f"remote debugging is disabled in pid {target.pid}: {last}")
        raise InjectError(f"sys.remote_exec failed: {last}")
    return Attempt("sys.remote_exec", QUEUED, proc.stdout, time.monotonic() - t0)


# -- one request, end to end ----------------------------------------------------------


@dataclass
class Outcome:
    result: dict[str, Any]
    transport: str  # "pending call via lldb", "direct call via lldb", "sys.remote_exec"
    stopped: float  # seconds the debugger had the process stopped (upper bound)
    waited: float  # seconds from the first attempt until the result came


def run_request(pid: int, request: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """Run ``request`` (action attach/detach/ping, plus options) in process ``pid``."""
    target = inspect_target(pid)
    workdir = tempfile.mkdtemp(prefix="poolscope-inject-")
    os.chmod(workdir, 0o700)
    # The target (same user) must be able to read the request and write the result.
    result_path = os.path.join(workdir, "result.json")
    request_path = os.path.join(workdir, "request.json")
    t_start = time.monotonic()
    deadline = time.time() + timeout
    full = dict(
        request,
        id=secrets.token_hex(8),
        deadline=deadline,
        result=result_path,
        python=f"{sys.version_info[0]}.{sys.version_info[1]}",
        instrument_root=instrument_root(),
    )
    try:
        Path(request_path).write_text(json.dumps(full))
        stmt = statement(request_path)
        if len(stmt.encode()) >= PAGE:
            raise InjectError("the bootstrap statement is too long (install path too long)")
        attempts: list[Attempt] = []
        tried: list[str] = []
        if target.version >= (3, 14):
            script = os.path.join(workdir, "remote.py")
            Path(script).write_text(stmt)
            attempts.append(_remote_exec(target, script, timeout))
        else:
            attempts.append(_one_attempt(target, stmt, timeout / 2, tried))
        retried = target.version >= (3, 14)
        while True:
            if os.path.exists(result_path):
                result: dict[str, Any] = json.loads(Path(result_path).read_text())
                last = attempts[-1]
                how = "direct call" if last.code in (DIRECT_OK, DIRECT_FAILED) else "pending call"
                transport = (
                    last.debugger
                    if last.debugger == "sys.remote_exec"
                    else f"{how} via {last.debugger}"
                )
                return Outcome(
                    result,
                    transport,
                    sum(a.seconds for a in attempts if a.debugger != "sys.remote_exec"),
                    time.monotonic() - t_start,
                )
            last = attempts[-1]
            if last.code == DIRECT_FAILED and not retried:
                raise InjectError(
                    f"the bootstrap failed inside pid {pid} (PyRun_SimpleString returned -1)"
                )
            if last.code == QUEUE_FAILED:
                raise InjectError(f"Py_AddPendingCall failed in pid {pid} (its queue is full)")
            now = time.time()
            if now >= deadline:
                raise InjectError(
                    f"pid {pid} reached no safe point within {timeout:g}s (busy in a C call "
                    "holding the GIL?); nothing was left behind - try again, or a longer --timeout"
                )
            if not retried and now >= deadline - timeout / 2:
                retried = True
                if _alive(pid):
                    attempts.append(_one_attempt(target, stmt, timeout / 4, tried))
            if not _alive(pid):
                raise InjectError(f"pid {pid} exited")
            time.sleep(0.02)
    finally:
        # The request goes first: a pending call that runs later finds nothing to do.
        shutil.rmtree(workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _read(f"/proc/{pid}/stat").split(") ")[-1].startswith("Z")
