"""Services that belong to one process: created on first use, made anew in a forked child."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from flask import Flask

T = TypeVar("T")

_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_locks_lock = threading.Lock()


def per_process(app: Flask, name: str, create: Callable[[], T]) -> T:
    """`app.extensions[name]`, made by `create()` once in this process (a forked child, which
    inherits its parent's entry but not its threads, makes its own)."""
    entry = app.extensions.get(name)
    if entry is None or entry[0] != os.getpid():
        with _locks_lock:
            lock = _locks[name]
        with lock:
            entry = app.extensions.get(name)
            if entry is None or entry[0] != os.getpid():
                entry = app.extensions[name] = (os.getpid(), create())
    return entry[1]


def pop_own(app: Flask, name: str) -> object | None:
    """Remove `app.extensions[name]` and return it if this process made it, else None."""
    entry = app.extensions.pop(name, None)
    return entry[1] if entry is not None and entry[0] == os.getpid() else None
