"""hearth's Python zygote: loads the function once, forks a fresh process per invocation.

Started by hearth-agent as ``python3 -B bootstrap.py [--stem] CODE_DIR`` with a unix stream socket
on fd 3 (the control socket) and a log pipe on fds 1 and 2. Never runs handler code
itself: it only imports the user's module (handler and main modes) or compiles the script
(script mode), then serves invocations one at a time.

The next invocation's process is forked ahead of time (the "spare": it has already called
setsid and raised its OOM score, and waits on a private socket), so an invocation pays
no fork. The spare is made at start and whenever the agent says "prepare" (after it has
swept the previous invocation's leftovers), or on demand if there is none.

agent -> zygote   [u32 BE n][n bytes JSON header], where the header is one of
                  {request_id, deadline_ms, attempt, event_len[, output_dir]}, with four fds
                      attached (SCM_RIGHTS): stdout, stderr, result pipe write ends and
                      the event pipe's read end; output_dir becomes the process's
                      $OUTPUT_DIR, attempt its $HEARTH_ATTEMPT. The event itself never passes through the zygote:
                      the agent writes its event_len bytes into the event pipe, which
                      only the invocation's process reads, so no earlier caller's event
                      is in the memory the next spare inherits.
                  {"prepare": true}, no fds: fork the next spare now
                  {"load": true, "env": {...}}, no fds, once, only with --stem (a stem's
                      zygote started before any function): the code is now in CODE_DIR,
                      the function's environment replaces the stem's; load it
zygote -> agent   [u32 BE n][JSON], one of
                  {"ready": true, "mode": "handler" | "main" | "script"}   once, at start
                  {"ready": true, "mode": "stem"}     first, with --stem (before "load")
                  {"init_error": {"type", "message", "trace"}}             instead, then exit
                  {"pid": P}                                   once the spare has the event
                  {"pid": P, "status", "maxrss_kb", "utime", "stime"}      after wait4

The invocation's process writes {"usage": {"maxrss_kb", "utime", "stime"}, "ok": value}
or the same with "error": {"type", "message", "trace"} to the result pipe (usage: its own
getrusage), closes the result pipe, stdout and stderr, and leaves with os._exit. The
agent answers as soon as all three are closed, while the process is still exiting (the
sweep follows before the next call); an exit with no result tells the agent it crashed.
"""

import ast
import builtins
import gc
import importlib.util
import inspect
import json
import os
import resource
import socket
import struct
import sys
import time
import traceback
import types

CONTROL_FD = 3
RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_HEADER = 1 << 20

# Frames of these files are cut from the top of user tracebacks.
_INTERNAL_FILES = {os.path.abspath(__file__)}


def _send(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _trace(exc):
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in _INTERNAL_FILES or name.startswith("<frozen "):
            tb = tb.tb_next
        else:
            break
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _error_info(exc):
    return {"type": type(exc).__name__, "message": str(exc), "trace": _trace(exc)}


def _load_sdk():
    """Loads runtime/python/sdk.py as the module `sdk`, whatever the code package holds."""
    path = os.path.join(RUNTIME_DIR, "sdk.py")
    spec = importlib.util.spec_from_file_location("sdk", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sdk"] = module
    spec.loader.exec_module(module)
    _INTERNAL_FILES.add(path)
    return module


def _binds(tree, name):
    """Whether the module's top level binds `name` (def, class, assignment or import)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return True
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == name and node.value:
                return True
        elif isinstance(node, ast.ImportFrom):
            if any((a.asname or a.name) == name for a in node.names):
                return True
    return False


def _warm_imports(tree):
    """Script mode: import the script's top-level imports once, so each fork has them."""
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            try:
                importlib.import_module(name)
            except BaseException:  # the script will meet the error itself, in its process
                pass


def _arity(fn):
    """How many of (event, context) `fn` takes."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    count = 0
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return 2
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return min(count, 2)


class Channel:
    """Length-prefixed messages on a unix stream socket, with the fds that came along.

    One read may carry the end of one message and the start of the next (the kernel
    glues them), so bytes and fds left over stay here for the next call.
    """

    MAX_FDS = 16

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.fds = []

    def _fill(self):
        # Close-on-exec as they arrive (no ioctl per fd).
        data, fds, _flags, _addr = socket.recv_fds(
            self.sock, 1 << 16, self.MAX_FDS, socket.MSG_CMSG_CLOEXEC
        )
        self.fds.extend(fds)
        if not data:
            raise EOFError("socket closed")
        self.buf += data

    def recv(self, nfds):
        """The next message (header dict, `nfds` fds), or None at EOF."""
        try:
            while len(self.buf) < 4:
                self._fill()
            hlen = struct.unpack(">I", bytes(self.buf[:4]))[0]
            if hlen > MAX_HEADER:
                raise ValueError("message header too large")
            while len(self.buf) < 4 + hlen:
                self._fill()
            header = json.loads(bytes(self.buf[4 : 4 + hlen]))
            nfds = 0 if header.get("prepare") or header.get("load") else nfds
            total = 4 + hlen
            while len(self.fds) < nfds:
                self._fill()
        except EOFError:
            if not self.buf:
                return None
            raise
        del self.buf[:total]
        fds, self.fds = self.fds[:nfds], self.fds[nfds:]
        return header, fds

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()


class Zygote:
    def __init__(self, code_dir):
        self.code_dir = code_dir
        self.path = os.path.join(code_dir, "main.py")
        self.control = Channel(socket.socket(fileno=CONTROL_FD))
        os.set_inheritable(CONTROL_FD, False)
        self.mode = None
        self.fn = None
        self.arity = 2
        self.script = None
        self.sdk = None

    def prepare(self):
        """What loads before any code: the runtime's path and the SDK (a stem does this
        before its function is known, so the cold start does not)."""
        if self.sdk is not None:
            return
        sys.path.insert(0, self.code_dir)
        sys.path.append(RUNTIME_DIR)
        sys.argv = [self.path]
        self.sdk = _load_sdk()

    def load(self):
        self.prepare()
        try:
            with open(self.path, "rb") as f:
                source = f.read()
        except FileNotFoundError:
            raise FileNotFoundError("main.py not found at the root of the code package")
        tree = ast.parse(source, filename=self.path)
        if _binds(tree, "handler"):
            self.mode = "handler"
        elif _binds(tree, "main"):
            self.mode = "main"
        else:
            self.mode = "script"
        if self.mode == "script":
            self.script = compile(tree, self.path, "exec")
            _warm_imports(tree)
            return
        spec = importlib.util.spec_from_file_location("main", self.path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["main"] = module
        # The tree parsed above, compiled once: exec_module would read and parse the
        # file again.
        exec(compile(tree, self.path, "exec", dont_inherit=True), module.__dict__)
        fn = getattr(module, self.mode, None)
        if not callable(fn):
            raise TypeError("main.py: %s is not a function" % self.mode)
        self.fn = fn
        self.arity = _arity(fn)

    def serve(self):
        spare = self.prefork()
        while True:
            msg = self.control.recv(4)
            if msg is None:
                return
            header, fds = msg
            if header.get("prepare"):
                if spare is None:
                    spare = self.prefork()
                continue
            if spare is None:
                spare = self.prefork()
            pid = self.hand_over(spare, header, fds)
            spare = None
            for fd in fds:
                os.close(fd)
            _send(self.control.sock, {"pid": pid})
            _, status, ru = os.wait4(pid, 0)
            _send(
                self.control.sock,
                {
                    "pid": pid,
                    "status": status,
                    "maxrss_kb": ru.ru_maxrss,
                    "utime": ru.ru_utime,
                    "stime": ru.ru_stime,
                },
            )

    def prefork(self):
        """Forks the next invocation's process ahead of time: (pid, socket to hand it over)."""
        ours, theirs = socket.socketpair()
        _flush_std()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                ours.close()
                code = self.spare(theirs)
            except BaseException:  # a bug here must still end the process, never return
                try:
                    traceback.print_exc()
                    _flush_std()
                except BaseException:
                    pass
            os._exit(code)
        theirs.close()
        return pid, ours

    def hand_over(self, spare, header, fds):
        """Gives the invocation to the spare process; returns the pid that runs it.

        A spare found dead before the hand-over (the OOM killer, say) is replaced. One that
        dies during it is not retried: its status becomes the invocation's (a crash), so
        nothing ever runs the event after the agent has given up on it.
        """
        pid, sock = spare
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            sock.close()
            pid, sock = self.prefork()
        header = json.dumps(header).encode()
        data = struct.pack(">I", len(header)) + header
        try:
            sent = socket.send_fds(sock, [data], fds)
            sock.sendall(data[sent:])
        except OSError:
            pass  # it died: wait4 reports how
        finally:
            sock.close()
        return pid

    def spare(self, sock):
        """A pre-forked process: waits for its invocation, runs it; returns the exit code."""
        self.control.close()
        os.setsid()
        _set_dumpable(True)
        try:  # os.open: the io stack costs more than the write itself
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")
            os.close(fd)
        except OSError:
            pass
        channel = Channel(sock)
        msg = channel.recv(4)
        if msg is None:
            return 0  # the zygote went away before using us
        channel.close()
        header, fds = msg
        out_fd, err_fd, result_fd, event_fd = fds
        event = _read_exactly(event_fd, int(header.get("event_len", 0)))
        os.close(event_fd)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)
            except Exception:
                pass
        result, code = self.run(header, event)
        _flush_std()
        if result is not None:
            # Done: the agent answers once stdout, stderr and the result pipe are
            # closed (the exit is not waited for); the result goes last, so that it
            # wakes the agent once.
            os.close(1)
            os.close(2)
            view = memoryview(_with_usage(result))
            while view:
                view = view[os.write(result_fd, view) :]
            os.close(result_fd)
        return code

    def run(self, header, event_bytes):
        """Runs the user's code; returns (result bytes or None, exit code)."""
        request_id = str(header.get("request_id", ""))
        deadline_ms = int(header.get("deadline_ms", 0))
        os.environ["HEARTH_REQUEST_ID"] = request_id
        os.environ["HEARTH_DEADLINE_MS"] = str(deadline_ms)
        os.environ["HEARTH_ATTEMPT"] = str(int(header.get("attempt", 1)))
        output_dir = header.get("output_dir")
        if output_dir:
            os.environ["OUTPUT_DIR"] = str(output_dir)
        if event_bytes.strip():
            try:
                event = json.loads(event_bytes)
            except ValueError:
                event = event_bytes.decode("utf-8", "replace")
        else:
            event = None
        env = os.environ
        context = self.sdk.Context(
            request_id,
            env.get("HEARTH_FUNCTION_NAME", ""),
            _int(env.get("HEARTH_FUNCTION_VERSION")),
            _int(env.get("HEARTH_MEMORY_LIMIT_MB")),
            deadline_ms,
        )
        self.sdk._begin(event, context)
        try:
            if self.mode == "script":
                value = self.run_script()
            else:
                value = self.fn(*(event, context)[: self.arity])
                if inspect.isawaitable(value):
                    import asyncio

                    value = asyncio.run(_await(value))
                returned, output = self.sdk._result()
                if value is None and returned:
                    value = output
        except SystemExit as exc:
            if exc.code is None or exc.code == 0:
                return _encode_ok(self.sdk._result()[1]), 0
            if isinstance(exc.code, int):
                return None, exc.code & 0xFF or 1
            print(exc.code, file=sys.stderr)
            return None, 1
        except BaseException as exc:
            return _encode({"error": _error_info(exc)}), 0
        return _encode_ok(value), 0

    def run_script(self):
        module = types.ModuleType("__main__")
        module.__file__ = self.path
        module.__builtins__ = builtins
        sys.modules["__main__"] = module
        exec(self.script, module.__dict__)
        return self.sdk._result()[1]


async def _await(awaitable):
    return await awaitable


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _encode(obj):
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def _encode_ok(value):
    try:
        return _encode({"ok": value})
    except (TypeError, ValueError, RecursionError) as exc:
        return _encode(
            {
                "error": {
                    "type": "TypeError",
                    "message": "the handler's return value is not JSON-serialisable: %s" % exc,
                    "trace": "",
                }
            }
        )


def _with_usage(result):
    """`result` (a JSON object) with this process's own usage first."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    usage = '{"usage":{"maxrss_kb":%d,"utime":%.6f,"stime":%.6f},' % (
        ru.ru_maxrss,
        ru.ru_utime,
        ru.ru_stime,
    )
    return usage.encode() + result[1:]


def _read_exactly(fd, n):
    """`n` bytes from `fd` (fewer if the writer closed it early)."""
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


_libc = None


def _set_dumpable(on):
    """PR_SET_DUMPABLE. The zygote is not: an invocation (same uid) cannot open its memory
    through /proc and plant code there for every later fork. Each forked process is again,
    so that its own /proc/self files stay its own."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(4, 1 if on else 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE) failed")


def _await_load(zygote):
    """A stem's zygote: the interpreter is up and the runtime imported, with no code and
    no function's environment. Says so, then waits for the one function it will serve:
    {"load": true, "env": {...}} once its code is in CODE_DIR. False at EOF."""
    zygote.prepare()
    # What is loaded now is the runtime's, the same in every stem: collected and frozen
    # here, so that the collection after the function's code loads only walks its
    # objects.
    gc.collect()
    gc.freeze()
    _send(zygote.control.sock, {"ready": True, "mode": "stem"})
    msg = zygote.control.recv(0)
    if msg is None or not msg[0].get("load"):
        return False
    zone = os.environ.get("TZ")
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in msg[0].get("env", {}).items()})
    if os.environ.get("TZ") != zone and hasattr(time, "tzset"):
        time.tzset()
    return True


def main():
    _set_dumpable(False)
    stem = sys.argv[1] == "--stem"
    zygote = Zygote(sys.argv[2] if stem else sys.argv[1])
    if stem and not _await_load(zygote):
        return 0
    try:
        zygote.load()
    except BaseException as exc:
        _flush_std()
        _send(zygote.control.sock, {"init_error": _error_info(exc)})
        return 1
    _flush_std()
    # Everything loaded so far is read-only from here on: keep the collector from
    # touching it in the children (every touched page is copied after the fork).
    gc.collect()
    gc.freeze()
    _send(zygote.control.sock, {"ready": True, "mode": zygote.mode})
    zygote.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
