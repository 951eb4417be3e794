"""Reader processes that read files ahead of the model and survive each other's crashes.

A reader can die in ways no `try` catches: a segfault in a native parser, the OOM killer. With
torch's DataLoader that kills the whole iteration and every result with it. Here each reader is a
forked process of our own that reads one file at a time and records, in shared memory, which file
it is reading. When a reader dies, that file alone gets an error ("reader crashed (signal 11,
SIGSEGV)"); the files it had finished or not yet started are read again by a fresh reader.

Standard library and numpy only (no torch), like clip2point.engine.batching.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import C2PError

# A task id a reader writes into its slot while it is not reading anything.
_IDLE = -1
# How often an idle reader checks that the process that started it is still there.
_PARENT_POLL_S = 1.0
# How long close() waits for readers to leave on their own before terminating them.
_JOIN_S = 2.0


class _SendFailed:
    """Sent in place of a result that could not be pickled: that file fails, the reader lives on."""

    def __init__(self, message: str):
        self.message = message


def _crash_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"reader crashed (signal {-exitcode})"
        hint = ": killed, perhaps for lack of memory" if name == "SIGKILL" else ""
        return f"reader crashed (signal {-exitcode}, {name}{hint})"
    return f"reader process exited unexpectedly (exit code {exitcode})"


def _reader_main(tasks, results, slot, read_fn, parent_pid: int, close_fds: list, nice: int) -> None:
    """Loop of one reader process: receive (task id, path), read, send (task id, value)."""
    # Ctrl-C goes to the whole process group; the parent decides what happens, readers just stop when told.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    for conn in close_fds:  # inherited ends of other readers' pipes: keep EOFs working
        try:
            conn.close()
        except OSError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:  # forked from a process that runs a model: one thread is enough here
        try:
            torch.set_num_threads(1)
        except Exception:
            pass
    # Sending happens on a thread, so a reader keeps reading while the parent is busy with the model.
    outbox: deque = deque()
    ready = threading.Condition()

    def sender():
        while True:
            with ready:
                while not outbox:
                    ready.wait()
                item = outbox.popleft()
            if item is None:
                return
            try:
                results.send(item)
            except (OSError, EOFError):
                os._exit(0)  # the parent is gone
            except Exception as e:  # an unpicklable result: that file fails, not the reader
                results.send((item[0], _SendFailed(f"reader could not return the result ({type(e).__name__}: {e})"[:500])))

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()

    def post(item):
        with ready:
            outbox.append(item)
            ready.notify()

    while True:
        try:
            while not tasks.poll(_PARENT_POLL_S):
                if os.getppid() != parent_pid:
                    os._exit(0)
            task = tasks.recv()
        except (OSError, EOFError):
            break
        if task is None:
            break
        task_id, path = task
        slot.value = task_id
        value = read_fn(path)
        slot.value = _IDLE
        post((task_id, value))
    post(None)
    thread.join()


@dataclass
class _Reader:
    process: object
    tasks: object  # parent's sending end
    results: object  # parent's receiving end
    slot: object  # shared int: the task being read, or _IDLE
    outstanding: deque = field(default_factory=deque)  # task ids sent and not yet answered, in order


class ReaderPool:
    """`workers` forked processes applying `read_fn(path)` (which must not raise) to paths.

    `imap(paths)` yields `("ok", value)` or `("crashed", message)` for each path, in order, reading
    at most `ahead` paths beyond the one being consumed. `nice` lowers the readers' scheduling
    priority (when the model runs on the same CPU cores, it should not wait for them). Use as a
    context manager (or call `close()`), so the processes end with the work.
    """

    def __init__(self, workers: int, read_fn: Callable, *, ahead: int = 64, nice: int = 0):
        import multiprocessing as mp

        if workers < 1:
            raise ValueError("a reader pool needs at least one worker")
        # fork on Linux: readers start in milliseconds and share the parent's imports (as DataLoader's
        # workers do); elsewhere fork is unsafe or missing, and spawn starts a fresh interpreter.
        self._fork = sys.platform.startswith("linux")
        self._ctx = mp.get_context("fork" if self._fork else "spawn")
        self.read_fn = read_fn
        self.nice = int(nice)
        self.ahead = max(int(ahead), workers)
        self.readers: list[_Reader] = []
        self._deaths_without_culprit = 0
        self._closed = False
        for _ in range(workers):
            self.readers.append(self._start())

    def _start(self) -> _Reader:
        task_recv, task_send = self._ctx.Pipe(duplex=False)
        result_recv, result_send = self._ctx.Pipe(duplex=False)
        slot = self._ctx.RawValue("q", _IDLE)
        # A forked reader inherits every pipe end the parent holds; it closes those that are not its own.
        others = [end for r in self.readers for end in (r.tasks, r.results)] + [task_send, result_recv] if self._fork else []
        process = self._ctx.Process(
            target=_reader_main, args=(task_recv, result_send, slot, self.read_fn, os.getpid(), others, self.nice), daemon=True,
        )
        process.start()
        # The parent keeps only its own ends, so a dead reader reads as EOF, never as a hang.
        task_recv.close()
        result_send.close()
        return _Reader(process, task_send, result_recv, slot)

    def imap(self, paths: Sequence) -> Iterator[tuple[str, object]]:
        from multiprocessing.connection import wait

        paths = list(paths)
        done: dict[int, tuple[str, object]] = {}
        todo: deque[int] = deque(range(len(paths)))  # tasks not yet given to a reader (retries go first)
        for consumed in range(len(paths)):
            while consumed not in done:
                self._dispatch(paths, todo, consumed, done)
                busy = [r for r in self.readers if r.outstanding]
                if not busy:
                    raise C2PError("internal error: no reader holds the next file")  # pragma: no cover
                ready = wait([r.results for r in busy] + [r.process.sentinel for r in busy])
                for r in busy:
                    if r.results in ready:
                        if not self._receive(r, done):
                            self._bury(r, done, todo)
                    elif r.process.sentinel in ready:
                        self._bury(r, done, todo)
            yield done.pop(consumed)

    def _dispatch(self, paths, todo: deque, consumed: int, done: dict) -> None:
        while todo and todo[0] < consumed + self.ahead:
            reader = min(self.readers, key=lambda r: len(r.outstanding))
            task = todo[0]
            try:
                reader.tasks.send((task, paths[task]))
            except OSError:  # it died while idle
                self._bury(reader, done, todo)
                continue
            todo.popleft()
            reader.outstanding.append(task)

    def _receive(self, reader: _Reader, done: dict) -> bool:
        """Take one answer from `reader`; False when its pipe is closed (it died)."""
        try:
            task, value = reader.results.recv()
        except Exception:  # EOF: it died; anything else: a message it could not finish
            return False
        if reader.outstanding and reader.outstanding[0] == task:
            reader.outstanding.popleft()
        else:  # pragma: no cover - a reader answers in the order it was asked
            reader.outstanding.remove(task)
        done[task] = ("crashed", value.message) if isinstance(value, _SendFailed) else ("ok", value)
        return True

    def _bury(self, reader: _Reader, done: dict, todo: deque) -> None:
        """A reader has exited: keep what it sent, blame the file it was reading, retry the rest."""
        while True:
            try:
                if not reader.results.poll() or not self._receive(reader, done):
                    break
            except (EOFError, OSError):
                break
        if reader.process.is_alive():  # its pipe broke but it runs on: it cannot be trusted any more
            reader.process.kill()
        reader.process.join()
        culprit = reader.slot.value
        message = _crash_message(reader.process.exitcode)
        retry = [t for t in reader.outstanding if t != culprit and t not in done]
        if culprit in reader.outstanding and culprit not in done:
            done[culprit] = ("crashed", message)
            self._deaths_without_culprit = 0
        else:
            self._deaths_without_culprit += 1
            if self._deaths_without_culprit > 3:
                raise C2PError(f"reader processes keep dying without reading a file: {message}")
        for conn in (reader.tasks, reader.results):
            conn.close()
        self.readers.remove(reader)
        todo.extendleft(sorted(retry, reverse=True))
        try:
            self.readers.append(self._start())
        except OSError as e:
            if not self.readers:
                raise C2PError(f"cannot start a reader process again after a crash ({e.strerror or e})") from e

    def close(self, *, now: bool = False) -> None:
        """End the readers: politely (finish, then leave) or, with `now`, by SIGTERM."""
        if self._closed:
            return
        self._closed = True
        for r in self.readers:
            if not now:
                try:
                    r.tasks.send(None)
                except OSError:
                    pass
            else:
                r.process.terminate()
        for r in self.readers:
            r.process.join(_JOIN_S)
            if r.process.is_alive():
                r.process.kill()
                r.process.join()
            for conn in (r.tasks, r.results):
                conn.close()
        self.readers = []

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(now=exc_type is not None)
