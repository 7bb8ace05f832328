"""Element filters on a large materials table: ``ElementKeys`` turns "contains Bi and Se, not
O" into the few ``elements_key`` values that satisfy it (PostgreSQL only), so the ranking
(``materials.learning.ranking``) looks them up in the btree index instead of scanning with LIKE."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from django.db import connections
from django.db.models import Max

from materials.models import Material


class ElementKeys:
    """The distinct ``elements_key`` values of the materials table, kept per process.

    A few tens of thousands of element sets stand for hundreds of thousands of materials, so
    "contains Bi and Se, not O" is answered from a per-element index of those keys in
    microseconds; the database then looks the keys up in its btree index. Every use reads
    ``MAX(id)``; new materials are added by reading the newest ids again (with a margin, for
    out-of-order commits); a smaller maximum (a reset) or the age limit (hand edits in the
    admin) rebuilds everything.
    """

    MIN_TABLE_ID = 20_000  # below this a LIKE scan is already fast: no cache
    MAX_AGE_SECONDS = 300
    RESCAN_MARGIN = 5_000
    MAX_KEYS_IN_QUERY = 5_000  # beyond this the filter is not selective: the ranking walk is faster

    def __init__(self):
        self._lock = threading.Lock()
        self._state: dict[str, _KeyState] = {}

    def matching(self, include, exclude, using: str = "default") -> list[str] | None:
        """The element keys satisfying the filter, or None where the cache does not apply."""
        if connections[using].vendor != "postgresql" or not include:
            return None
        state = self.state(using)
        if state is None:
            return None
        keys = set.intersection(*(state.by_element.get(element, set()) for element in include))
        for element in exclude:
            keys = keys - state.by_element.get(element, set())
        return sorted(keys) if len(keys) <= self.MAX_KEYS_IN_QUERY else None

    def state(self, using: str = "default") -> _KeyState | None:
        materials = Material.objects.using(using).order_by()
        max_id = materials.aggregate(top=Max("id"))["top"] or 0
        if max_id < self.MIN_TABLE_ID:
            return None
        with self._lock:
            state = self._state.get(using)
            if state is None or max_id < state.max_id or time.monotonic() - state.built > self.MAX_AGE_SECONDS:
                state = _KeyState(max_id=max_id, built=time.monotonic())
                state.add(materials.values_list("elements_key", flat=True).distinct())
            elif max_id > state.max_id:
                newest = materials.filter(pk__gt=state.max_id - self.RESCAN_MARGIN)
                state.add(newest.values_list("elements_key", flat=True).distinct())
                state.max_id = max_id
            self._state[using] = state
            return state

    def clear(self) -> None:
        with self._lock:
            self._state.clear()


@dataclass
class _KeyState:
    max_id: int
    built: float
    by_element: dict[str, set[str]] = field(default_factory=dict)

    def add(self, keys) -> None:
        for key in keys:
            for element in key.strip("-").split("-"):
                if element:
                    self.by_element.setdefault(element, set()).add(key)


element_keys = ElementKeys()
