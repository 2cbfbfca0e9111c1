"""Finding objects that already exist, without writing to the heap.

``install()`` may run after engines, pools, sessions and Django connections exist - in the
master, or late, in a worker after the fork. The obvious scan, ``gc.get_objects()``, builds a
list holding a new reference to every object: one reference-count write per object, which in a
worker un-shares nearly every page it inherited from the master. ``gc.get_referrers()`` only
reads: it walks the collector's lists and asks each object what it refers to. An instance of a
class defined in Python refers to its class (CPython's ``subtype_traverse`` visits the type of
heap-type instances since 3.8), so "the instances of C" are the referrers of C and of its
subclasses. Objects frozen with ``gc.freeze()`` are not searched.
"""

from __future__ import annotations

import gc
from typing import Any


def _with_subclasses(cls: type) -> list[type]:
    found, todo = [], [cls]
    while todo:
        current = todo.pop()
        if current not in found:
            found.append(current)
            todo.extend(current.__subclasses__())
    return found


def instances_of(cls: type) -> list[Any]:
    """Every live, collector-tracked instance of ``cls`` or a subclass (one read-only pass)."""
    classes = _with_subclasses(cls)
    # type(), not isinstance(): lazy proxies (Django's settings, werkzeug's LocalProxy) answer
    # __class__ by evaluating themselves, which can raise or have side effects.
    return [obj for obj in gc.get_referrers(*classes) if type(obj) in classes]


def holders_of(obj: Any, cls: type) -> list[Any]:
    """Instances of ``cls`` that hold ``obj`` in an attribute (at most two read-only passes).

    An instance whose attributes live in a ``__dict__`` refers to ``obj`` through that dict,
    so the dicts that refer to it are traced back to their owners.
    """
    classes = _with_subclasses(cls)
    referrers = gc.get_referrers(obj)
    direct = [r for r in referrers if type(r) in classes]
    if direct:
        return direct
    dicts = [r for r in referrers if type(r) is dict]
    if not dicts:
        return []
    ids = {id(d) for d in dicts}
    return [
        owner
        for owner in gc.get_referrers(*dicts)
        if type(owner) in classes and id(getattr(owner, "__dict__", None)) in ids
    ]
