"""A reader for CIFAR's "python version" batches that never unpickles.

The official ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` batches
are pickles written by Python 2: a dict of byte-string keys holding a
``numpy.ndarray`` of uint8 pixel rows and lists of int labels. Loading them
with ``pickle`` would let the file run arbitrary code, so this module walks
the opcode stream with :func:`pickletools.genops` (a disassembler, which
executes nothing) and interprets only the plain-data opcodes plus exactly the
three globals a pickled numpy array needs (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``) and ``_codecs.encode`` (Python 3's
protocol-2 spelling of bytes). Anything else is rejected with
:class:`UnsafePickleError`. The project's canonical CIFAR format remains the
binary version (:mod:`celo.data.formats`); this reader exists for users who
already hold the python batches.
"""

from __future__ import annotations

import io
import pickletools
from typing import Any

import numpy as np


class UnsafePickleError(ValueError):
    """The stream uses an opcode or global outside the CIFAR batch subset."""


class _Mark:
    """Stack sentinel pushed by MARK."""


class _ArrayStub:
    """An ndarray under construction: REDUCE makes it, BUILD fills it."""

    array: np.ndarray | None = None


class _DtypeStub:
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


class _Global:
    """One of the whitelisted globals; never callable, only matched by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_RECONSTRUCT, _NDARRAY, _DTYPE, _ENCODE = (
    _Global(n) for n in ("_reconstruct", "ndarray", "dtype", "encode")
)
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("_codecs", "encode"): _ENCODE,
}
_PY2_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING"}  # genops hands these back latin-1 decoded
_PLAIN_ARGS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
}  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _reduce(func: Any, args: tuple) -> Any:
    if func is _RECONSTRUCT and args and args[0] is _NDARRAY:
        return _ArrayStub()
    if func is _DTYPE and args:
        descr = args[0].decode("latin-1") if isinstance(args[0], bytes) else args[0]
        return _DtypeStub(np.dtype(descr))
    if func is _ENCODE and len(args) == 2 and isinstance(args[0], str):
        return args[0].encode(args[1])
    raise UnsafePickleError(f"refusing to call {func!r} with {len(args)} arguments")


def _build(obj: Any, state: Any) -> None:
    if isinstance(obj, _DtypeStub):
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise UnsafePickleError("only simple (non-structured) dtypes are supported")
        order = state[1].decode() if isinstance(state[1], bytes) else state[1]
        if order in "<>":
            obj.dtype = obj.dtype.newbyteorder(order)
        return
    if isinstance(obj, _ArrayStub):
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub) or not isinstance(raw, bytes):
            raise UnsafePickleError("array state must be (version, shape, dtype, fortran, bytes)")
        flat = np.frombuffer(raw, dtype.dtype)
        obj.array = flat.reshape(shape, order="F" if fortran else "C")
        return
    raise UnsafePickleError(f"refusing to BUILD {type(obj).__name__}")


def _finish(obj: Any) -> Any:
    """Replaces stubs by their values, recursively."""
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise UnsafePickleError("array was never filled by BUILD")
        return obj.array
    if isinstance(obj, dict):
        return {_finish(k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v) for v in obj)
    if isinstance(obj, (_DtypeStub, _Mark, _Global)):
        raise UnsafePickleError("a bare global or dtype is not data")
    return obj


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if isinstance(stack[i], _Mark):
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise UnsafePickleError("MARK expected on the stack")


def read_batch(data: bytes) -> dict:
    """Decodes one CIFAR python batch without executing it.

    Args:
        data: the raw file contents (e.g. ``data_batch_1`` or ``train``).

    Returns:
        The batch dict with keys decoded to ``str`` (``"data"``, ``"labels"``,
        ``"fine_labels"``, ...), the pixel array as numpy, lists as lists.

    Raises:
        UnsafePickleError: on anything outside the plain-data subset.
    """
    try:
        batch = _run(data)
    except (IndexError, KeyError, AttributeError, TypeError, ValueError) as err:
        if isinstance(err, UnsafePickleError):
            raise
        raise UnsafePickleError(f"malformed CIFAR batch: {err}") from err
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _run(data: bytes) -> dict:
    """The opcode interpreter behind :func:`read_batch`."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            break
        if name == "MARK":
            stack.append(_Mark())
        elif name in _PY2_STRINGS:
            stack.append(arg.encode("latin-1"))
        elif name in _PLAIN_ARGS:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_TUPLE": ()}[name])
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name in ("TUPLE", "LIST", "DICT"):
            items = _pop_mark(stack)
            if name == "DICT":
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            else:
                stack.append(tuple(items) if name == "TUPLE" else items)
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else _pop_mark(stack)
            stack[-1].extend(items)
        elif name in ("SETITEM", "SETITEMS"):
            items = stack[-2:] if name == "SETITEM" else _pop_mark(stack)
            if name == "SETITEM":
                del stack[-2:]
            stack[-1].update(zip(items[::2], items[1::2], strict=True))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                key = tuple(arg.split(" ", 1))
            else:
                key = tuple(stack[-2:])
                del stack[-2:]
            if key not in _GLOBALS:
                raise UnsafePickleError(f"refusing global {'.'.join(key)}")
            stack.append(_GLOBALS[key])
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(_reduce(stack.pop(), args))
        elif name == "BUILD":
            state = stack.pop()
            _build(stack[-1], state)
        else:
            raise UnsafePickleError(f"refusing opcode {name}")
    if len(stack) != 1 or not isinstance(stack[0], dict):
        raise UnsafePickleError("a CIFAR batch must be a single dict")
    return _finish(stack[0])
