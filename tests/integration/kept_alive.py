"""Everything a raised exception keeps alive, walked as a crash reporter (or worse) would.

:func:`kept_alive` yields the text of every object reachable from an exception: its chain
(``__cause__``, ``__context__`` even behind ``from None``), its attributes and everything
those reference (``gc.get_referents``), and the frames of its traceback as a crash reporter
captures them (Sentry's default): the repr of every local, containers (``os.environ``
included) expanded, and what generators and asyncio keep behind those locals (a suspended
generator's or coroutine's frame, a task's coroutine, a future's result or exception).
iamdb's own secret holders (``Token``, ``Lease``, ``Credentials``) may sit in those frames:
their repr hides the value, and the walk does not open them.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path

# Frames of the test harness (a test function's locals hold every secret), not of the code.
_HARNESS = tuple(
    str(Path(m.__file__).parent) for m in (sys.modules["_pytest"], sys.modules["pluggy"])
)


def _harness(frame: types.FrameType) -> bool:
    return frame.f_code.co_name.startswith("test_") or frame.f_code.co_filename.startswith(_HARNESS)


_SUSPENDED = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.WrapperDescriptorType,
)


def kept_alive(exc: BaseException) -> Iterator[tuple[str, str]]:
    """(path, text) of everything ``exc`` keeps alive, walked as the module docstring says.

    ``held`` objects (the exception, its chain, what their attributes reference) are walked
    through and through; a frame's ``local`` objects show their repr and, for containers,
    their items, as a crash reporter serialises them.
    """
    seen: set[int] = set()
    keep: list[object] = []  # ids stay unique while the walk runs
    todo: list[tuple[str, object, str]] = [(type(exc).__name__, exc, "held")]
    while todo:
        path, obj, mode = todo.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE) or obj is None:
            continue
        seen.add(id(obj))
        keep.append(obj)
        if isinstance(obj, str):
            yield path, obj
            continue
        if isinstance(obj, (bytes, bytearray)):
            yield path, bytes(obj).decode("latin-1")
            continue
        if isinstance(obj, types.FrameType):
            if not _harness(obj):
                where = f"{path} {obj.f_code.co_name}()"
                todo += [(f"{where}.{k}", v, "local") for k, v in obj.f_locals.items()]
            continue
        if isinstance(obj, types.TracebackType):
            todo += [(path, obj.tb_frame, mode), (path, obj.tb_next, mode)]
            continue
        if isinstance(obj, _SUSPENDED):
            # A generator, coroutine or async generator (a login's steps, a task's coroutine)
            # keeps its frame, locals included, until it finishes.
            for attribute in ("gi_frame", "cr_frame", "ag_frame"):  # None once it finished
                todo.append((f"{path} {type(obj).__name__}", getattr(obj, attribute, None), mode))
            continue
        if isinstance(obj, asyncio.Future):  # a task keeps its coroutine, a future its outcome
            coro = obj.get_coro() if isinstance(obj, asyncio.Task) else None
            outcome = None
            if obj.done() and not obj.cancelled():
                outcome = obj.exception() or obj.result()
            todo += [(f"{path}.coro", coro, mode), (f"{path}.outcome", outcome, mode)]
        try:
            yield path + " repr", repr(obj)
        except Exception as err:  # a repr that fails shows nothing
            yield path + " repr", type(err).__name__
        if isinstance(obj, BaseException):
            yield path + " str", str(obj)
            links = {
                "args": obj.args,
                "__cause__": obj.__cause__,
                "__context__": obj.__context__,
                "__traceback__": obj.__traceback__,
                "__notes__": getattr(obj, "__notes__", None),
                **vars(obj),
            }
            todo += [(f"{path}.{k}", v, "held") for k, v in links.items()]
        elif isinstance(obj, Mapping):
            todo += [(f"{path}[{k!r:.30}]", v, mode) for k, v in list(obj.items())]
            todo += [(f"{path} key", k, mode) for k in list(obj)]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += [(f"{path}[{i}]", v, mode) for i, v in enumerate(obj)]
        elif mode == "held":
            attributes = vars(obj) if hasattr(obj, "__dict__") else {}
            todo += [(f"{path}.{k}", v, "held") for k, v in attributes.items()]
            todo += [(f"{path} ref", v, "held") for v in gc.get_referents(obj)]
    del keep
