"""Warm process start: a template process imports the heavy libraries once, and each cell forks from it.

Every cell still runs in its own fresh process, and CUDA is initialised only there: the template
imports torch, segbench and the libraries the cell will need (transformers, ultralytics, onnxruntime,
torchao ...) and never touches a device, so a fork of it starts a cell in milliseconds instead of the
seconds those imports take. The template imports exactly what the cell would import anyway (its
family's library, its backend's, its precision's), so a cell's host memory is what a spawned
cell's would be.

Templates are keyed by that import list; at most `MAX_TEMPLATES` stay alive (each is idle, blocked on
a pipe, while a cell measures). The base template (torch, numpy, segbench) is spawned, by `segbench run`
as soon as the suite's schema holds (`prestart`); a template for more imports is forked from the base
and imports only the rest, so a suite's fifth import set costs a second, not another fresh interpreter.
A template that dies is detected, never waited on: a fork request or the wait for a running cell's exit
reads end-of-file on the template's pipe and raises `TemplateDied`; the next cell starts a fresh template
and its record says why.

Some libraries touch CUDA while being imported (transformers imports torchao, whose kernels module asks
`torch.cuda.current_device()`), and a process forked after that cannot use CUDA. Each template therefore
forks a probe once and reports whether its children could; a CUDA cell whose template could not is
forked from the base template instead (and imports its libraries itself), or spawned if even that
one could not. The record's `startup` says which and why.

`SEGBENCH_WARM_START=0` turns this off: every cell is spawned, as before.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

import psutil

from segbench.system.process import die_with_parent, exit_text

WARM_START_ENV = "SEGBENCH_WARM_START"
MAX_TEMPLATES = 4  # a quantization suite cycles through ~4 import sets per model; each idle template holds ~0.6 GB
READY_TIMEOUT_S = 600.0  # imports on a busy machine can take a minute; a hung template still ends
# arch.bootstrap and scipy.stats give every pass its block-bootstrap interval; imported once here, not in each cell.
BASE_IMPORTS = (
    "torch",
    "torchvision",
    "numpy",
    "psutil",
    "arch.bootstrap",
    "scipy.stats",
    "segbench.cell.passes",
    "segbench.run.isolation",
)
# Never imported in a template: importing OpenVINO starts a telemetry thread that itself forks a process
# and waits on the network; forking the template while that thread runs could leave the child a held lock.
# Cells of these libraries import them themselves.
FORK_UNSAFE_PACKAGES = frozenset({"openvino", "nncf"})
# In the template only: torch.cuda.is_available() asks NVML instead of initialising the CUDA driver.
TEMPLATE_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}


class TemplateUnusable(RuntimeError):
    """No template can start this cell's process: the caller spawns it instead."""


class TemplateDied(TemplateUnusable):
    """The template process ended (crashed, was killed) while the runner needed it."""


class TemplateTouchedCuda(TemplateUnusable):
    """Even the base template's children could not use CUDA, so a CUDA cell cannot be forked."""


def warm_start_enabled() -> bool:
    return os.environ.get(WARM_START_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class _ChildConnection:
    """Stands in an argument list for the pipe end the forked child reports on (sent as a file descriptor)."""


_CHILD_CONNECTION = _ChildConnection()


# ---- inside the template --------------------------------------------------------------------------


def _preload(imports: tuple[str, ...]) -> dict[str, str]:
    failed: dict[str, str] = {}
    for name in imports:
        try:
            importlib.import_module(name)
        # An optional library that is missing is the cell's to report, with its own message.
        except Exception as exc:  # noqa: BLE001
            failed[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return failed


def _warm_state() -> None:
    """What every cell does first and no device is involved in: registry discovery, decoding the photographs.

    Host-only work (numpy and PIL, no torch op), so no thread pool exists yet when the template forks.
    """
    from segbench.backends import backend_names  # lazy: imports torch
    from segbench.data.images import sample_photographs  # lazy: imports torch (and numpy)
    from segbench.models.registry import list_models  # lazy: imports torch
    from segbench.precision import precision_names  # lazy: imports torch

    backend_names(), precision_names(), list_models()
    sample_photographs()


def _cuda_fork_problem() -> str | None:
    """Why a child forked from this process could not use CUDA, or None if it could.

    Initialising CUDA, or asking the CUDA driver for the device count, marks every later fork as unable to
    use CUDA (torch raises "Cannot re-initialize CUDA in forked subprocess" there); a forked probe reads the mark.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if torch.cuda.is_initialized():
        return "initialised CUDA while importing"
    pid = os.fork()
    if pid == 0:
        os._exit(1 if torch.cuda._is_in_bad_fork() else 0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "asked the CUDA driver for devices while importing"
    return None


def _run_forked(
    connection: Connection, target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str], fd: int
) -> None:
    """The cell's process, right after the fork: the runner's environment, the pipe it reports on, then the target."""
    code = 1
    try:
        connection.close()  # only the template talks to the runner, so the template's death reaches it as EOF
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)  # what a spawned child would have inherited at this moment
        from multiprocessing import util

        util._finalizer_registry.clear()
        util._run_after_forkers()
        child_connection = Connection(fd)
        target(*(child_connection if isinstance(arg, _ChildConnection) else arg for arg in args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    # Whatever it is, the exit code tells the runner and the traceback goes to the cell's log.
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _template_main(connection: Connection, imports: tuple[str, ...]) -> None:
    die_with_parent()  # a killed runner takes its templates (and through them their cells) along
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle; it closes the template
    os.environ.update(TEMPLATE_ENV)
    _prepare_and_serve(connection, imports)


def _prepare_and_serve(connection: Connection, imports: tuple[str, ...], derived_from: int | None = None) -> None:
    """Import, warm up, report ready, then fork cells (and derived templates) on request until closed."""
    started = time.perf_counter()
    failed = _preload(imports)  # in a derived template only the extra imports take time: the rest are loaded
    try:
        _warm_state()
    # The cell does the same work and reports the failure itself.
    except Exception as exc:  # noqa: BLE001
        failed["warm state"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    # Everything imported so far lives as long as any cell: moved out of the collector's reach, a cell's
    # gc.collect() (release_preparation, automatic collections) no longer walks, and copies on write, the
    # template's whole heap (1.5 s per cell on a busy 2-core machine, 1 ms frozen).
    gc.freeze()
    connection.send(
        (
            "ready",
            {
                "pid": os.getpid(),
                "import_s": round(time.perf_counter() - started, 3),
                "derived_from": derived_from,
                "failed_imports": failed,
                "cuda_fork_problem": _cuda_fork_problem(),
                "python_threads": threading.active_count(),
                "frozen_objects": gc.get_freeze_count(),
            },
        )
    )
    _serve(connection)


def _serve(connection: Connection) -> None:
    derived: list[int] = []
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        derived = [pid for pid in derived if os.waitpid(pid, os.WNOHANG) == (0, 0)]  # reap the ended ones
        if message[0] == "derive":
            derived.append(_fork_derived(connection, message[1]))
        elif message[0] == "fork":
            _fork_cell(connection, *message[1:])
        else:
            return


def _fork_cell(connection: Connection, target: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str]) -> None:
    fd = reduction.recv_handle(connection)
    pid = os.fork()
    if pid == 0:
        _run_forked(connection, target, args, env, fd)
    os.close(fd)
    connection.send(("started", pid))
    _, status = os.waitpid(pid, 0)
    connection.send(("exited", os.waitstatus_to_exitcode(status)))


def _fork_derived(connection: Connection, wanted: tuple[str, ...]) -> int:
    """Fork a template for `wanted` (a superset of this one's imports), answering on the descriptor sent next.

    It imports only what this template lacks (a second or two for ultralytics, instead of the five that torch
    and everything else take again in a fresh process), and lives until closed, or until this template dies.
    """
    fd = reduction.recv_handle(connection)
    base = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            connection.close()  # only its own pipe: this template's death reaches the runner as EOF on it
            die_with_parent(check_parent=False)  # a fork does not inherit it: set again, tied to this template
            if os.getppid() != base:
                os._exit(1)
            _prepare_and_serve(Connection(fd), wanted, derived_from=base)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)  # never back into the base template's loop
    os.close(fd)
    connection.send(("derived", pid))
    return pid


# ---- in the runner --------------------------------------------------------------------------------


def cell_imports(cell: Any) -> tuple[str, ...]:
    """What a cell would import anyway: segbench and torch, its family's library, its backend's, its precision's.

    Nothing more, so a forked cell's host memory matches a spawned one's; the tuple is the template's key.
    """
    from segbench.backends import get_backend  # lazy: imports torch
    from segbench.models.registry import adapter_class  # lazy: imports torch
    from segbench.precision import get_precision  # lazy: imports torch

    extra: list[str] = []
    for owner in (
        lambda: adapter_class(cell.model),
        lambda: get_backend(cell.backend),
        lambda: get_precision(cell.precision),
    ):
        # An unknown name (a plugin's model, registered only in the cell) fails in the cell, with its message.
        with contextlib.suppress(Exception):
            extra.extend(owner().warm_imports)
    wanted = {name for name in extra if name.split(".")[0] not in FORK_UNSAFE_PACKAGES} - set(BASE_IMPORTS)
    return BASE_IMPORTS + tuple(sorted(wanted))


_OUTPUT: list[Any] = []  # one file every template of this process writes its stderr to


def _output_file() -> Any:
    if not _OUTPUT:
        _OUTPUT.append(tempfile.TemporaryFile(mode="w+b"))
    return _OUTPUT[0]


def template_output() -> str:
    """What the templates wrote to stderr so far (libraries' chatter while importing), for the run's log."""
    if not _OUTPUT:
        return ""
    sink = _OUTPUT[0]
    sink.seek(0)
    return sink.read().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _stderr_into(sink: Any) -> Iterator[None]:
    """fd 2 points at `sink` within the block, so a process started there writes its stderr into it for life."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _DerivedProcess:
    """A template the base template forked: not this process's child, so it is watched through psutil."""

    exitcode = None  # its exit status goes to the base template, its parent

    def __init__(self, pid: int):
        self.pid = pid
        self._process = psutil.Process(pid)

    def is_alive(self) -> bool:
        try:
            return self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)

    def kill(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self._process.kill()


def _spawn_template(imports: tuple[str, ...]) -> tuple[Connection, Any]:
    context = multiprocessing.get_context("spawn")
    connection, remote = context.Pipe(duplex=True)
    process = context.Process(target=_template_main, args=(remote, imports), name="segbench-template", daemon=True)
    # Its own file, not whatever fd 2 is now: a template can outlive the block that captures the parent's
    # chatter (`prestart` runs it beside the suite's checks), and its import warnings belong in the run's log.
    with _stderr_into(_output_file()):
        process.start()
    remote.close()
    return connection, process


class Template:
    """One template process and the pipe to it; `fork` asks it for a fresh child.

    Spawned afresh, or derived: forked by the base template and importing only what the base lacks.
    """

    def __init__(self, imports: tuple[str, ...], base: Template | None = None):
        self.imports = imports
        self.info: dict[str, Any] | None = None
        self.connection, self.process = _spawn_template(imports) if base is None else base.derive(imports)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def death(self, doing: str) -> TemplateDied:
        self.process.join(timeout=5)
        how = (
            "its exit status went to the base template, its parent"
            if isinstance(self.process, _DerivedProcess) and not self.process.is_alive()
            else exit_text(self.process.exitcode)
        )
        return TemplateDied(f"the forkserver (pid {self.pid}) died {doing} ({how})")

    def derive(self, imports: tuple[str, ...]) -> tuple[Connection, _DerivedProcess]:
        """A new template forked from this one, for `imports` (a superset of this one's): its pipe and process."""
        self.wait_ready()
        ours, theirs = multiprocessing.Pipe(duplex=True)
        try:
            self.connection.send(("derive", imports))
            reduction.send_handle(self.connection, theirs.fileno(), self.pid or 0)
        except OSError:
            ours.close()
            raise self.death("before a derived template could be forked") from None
        finally:
            theirs.close()
        pid = self.receive(READY_TIMEOUT_S, "while forking a derived template")[1]
        return ours, _DerivedProcess(pid)

    def receive(self, timeout_s: float | None, doing: str) -> tuple[Any, ...]:
        try:
            if not self.connection.poll(timeout_s):
                self.close()
                raise TemplateDied(
                    f"the forkserver (pid {self.pid}) did not answer within {timeout_s:g} s {doing}; killed"
                )
            return self.connection.recv()
        except (EOFError, OSError):
            raise self.death(doing) from None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        if self.info is None:
            self.info = self.receive(timeout_s, "while importing its libraries")[1]
        return self.info

    def _ready_waiting(self) -> bool:
        with contextlib.suppress(OSError, EOFError):
            return self.connection.poll(0)
        return False

    def fork(self, target: Callable[..., Any], args: tuple[Any, ...], fd: int) -> int:
        """A fresh child running target(*args), reporting on `fd`; returns its pid."""
        self.wait_ready()
        try:
            self.connection.send(("fork", target, args, dict(os.environ)))
            reduction.send_handle(self.connection, fd, self.pid or 0)
        except OSError:
            raise self.death("before the cell's process could be forked") from None
        return self.receive(READY_TIMEOUT_S, "while forking the cell's process")[1]

    def close(self) -> None:
        if self.info is None and not self._ready_waiting():
            self.process.kill()  # still importing (a run that stopped at a bad suite): nothing to wait for
            self.process.join()
            self.connection.close()
            return
        try:
            self.connection.send(("close",))
        except OSError:
            pass
        self.connection.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


_TEMPLATES: OrderedDict[tuple[str, ...], Template] = OrderedDict()


def template_for(imports: tuple[str, ...]) -> tuple[Template, str | None]:
    """The live template for this import list (started if needed), and why an earlier one was replaced."""
    template = _TEMPLATES.pop(imports, None)
    replaced = None
    if template is not None and not template.alive():
        replaced = str(template.death("between cells"))
        template.close()
        template = None
    if template is None:
        template = _new_template(imports)
    _TEMPLATES[imports] = template
    return template, replaced


def _new_template(imports: tuple[str, ...]) -> Template:
    """Derived from the base template when the imports extend it (the base stays, for the next one), else spawned."""
    if imports != BASE_IMPORTS and imports[: len(BASE_IMPORTS)] == BASE_IMPORTS:
        # Twice: a killed base can still look alive while the kernel tears its (large) address space down; the
        # derive then fails, and a fresh base serves. A spawned template serves only if that one fails too.
        for _ in range(2):
            base, _ = template_for(BASE_IMPORTS)
            _make_room()
            try:
                return Template(imports, base=base)
            except TemplateDied:
                forget(base)
    _make_room()
    return Template(imports)


def _make_room() -> None:
    """Close the least recently used templates beyond the cap; the base goes last (closing it ends those derived)."""
    while len(_TEMPLATES) >= MAX_TEMPLATES:
        oldest = next((key for key in _TEMPLATES if key != BASE_IMPORTS), next(iter(_TEMPLATES)))
        _TEMPLATES.pop(oldest).close()


def prestart() -> None:
    """Start the base template now, without waiting: its imports (seconds) overlap the runner's own start
    (checking the suite, capturing the environment) instead of delaying the first cell."""
    if warm_start_enabled():
        template_for(BASE_IMPORTS)


def _ready(imports: tuple[str, ...]) -> tuple[Template, dict[str, Any], str | None]:
    template, replaced = template_for(imports)
    try:
        return template, template.wait_ready(), replaced
    except TemplateDied:
        forget(template)
        raise


def live_templates() -> list[Template]:
    """The templates this process holds, oldest first."""
    return list(_TEMPLATES.values())


def forget(template: Template) -> None:
    """Drop a template that failed, so the next cell starts a fresh one."""
    for key, candidate in list(_TEMPLATES.items()):
        if candidate is template:
            del _TEMPLATES[key]
    template.close()


@atexit.register
def shutdown() -> None:
    # A Ctrl-C arriving while the templates close must not end the exit in a traceback.
    with contextlib.suppress(ValueError):  # ValueError: not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    close_templates()
    while _OUTPUT:
        _OUTPUT.pop().close()


def close_templates() -> None:
    """End every template this process holds."""
    while _TEMPLATES:
        template = _TEMPLATES.popitem()[1]
        try:
            template.close()
        except KeyboardInterrupt:
            template.process.kill()


class ForkedProcess:
    """The part of `multiprocessing.Process` that isolation uses, for a child forked from a template.

    One argument may be the sending end of a `multiprocessing.Pipe`: its descriptor is passed to the
    template, and the child gets a connection on it in its place.
    """

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        imports: tuple[str, ...],
        name: str = "segbench-cell",
        needs_cuda: bool = False,
    ):
        self.target = target
        self.args = args
        self.imports = imports
        self.needs_cuda = needs_cuda
        self.name = name
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.failure: str | None = None  # set when the template died under the child
        self.startup: dict[str, Any] = {}
        self._template: Template | None = None

    def start(self) -> None:
        connection = next(arg for arg in self.args if isinstance(arg, Connection))
        args = tuple(_CHILD_CONNECTION if arg is connection else arg for arg in self.args)
        started = time.perf_counter()
        template, info, replaced, cuda_fallback = self._ready_template()
        waited = time.perf_counter() - started
        self._template = template
        try:
            self.pid = template.fork(self.target, args, connection.fileno())
        except TemplateDied:
            forget(template)
            raise
        self.startup = {
            "mode": "forkserver",
            "template_pid": template.pid,
            "template_import_s": info["import_s"],
            "waited_for_template_s": round(waited, 3),
        }
        if info.get("derived_from"):
            self.startup["template_derived_from"] = info["derived_from"]  # its import_s counts only what it added
        if info["failed_imports"]:
            self.startup["failed_imports"] = info["failed_imports"]
        if replaced:
            self.startup["template_replaced"] = replaced
        if cuda_fallback:
            self.startup["cuda_fallback"] = cuda_fallback

    def _ready_template(self) -> tuple[Template, dict[str, Any], str | None, str | None]:
        """The template to fork from, its ready info, why an earlier one was replaced, and why the base one serves."""
        template, info, replaced = _ready(self.imports)
        if not self.needs_cuda or info["cuda_fork_problem"] is None:
            return template, info, replaced, None
        if self.imports != BASE_IMPORTS:
            base, base_info, base_replaced = _ready(BASE_IMPORTS)
            if base_info["cuda_fork_problem"] is None:
                extra = ", ".join(self.imports[len(BASE_IMPORTS) :])
                fallback = (
                    f"forked from the base template, since its own template {info['cuda_fork_problem']} ({extra}):"
                    " the cell imported those itself"
                )
                return base, base_info, base_replaced, fallback
            info = base_info
        raise TemplateTouchedCuda(f"a forked process could not use CUDA: the base template {info['cuda_fork_problem']}")

    def _wait(self, timeout_s: float | None) -> None:
        if self.exitcode is not None or self.failure is not None or self._template is None:
            return
        template = self._template
        if not template.connection.poll(timeout_s):
            return
        try:
            self.exitcode = template.receive(0, "while the cell ran")[1]
        except TemplateDied as died:
            self.failure = str(died)
            forget(template)

    def join(self, timeout: float | None = None) -> None:
        self._wait(timeout)

    def is_alive(self) -> bool:
        self._wait(0)
        return self.pid is not None and self.exitcode is None and self.failure is None

    def kill(self) -> None:
        if self.pid is not None and self.exitcode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
