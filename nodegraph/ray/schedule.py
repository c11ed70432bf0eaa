"""Which item a free worker runs next: model-affine, so that a batch over N models does not load
every model on every worker.

Items are grouped by the models they use (`ItemPlan.models`). A free worker takes:
1. an item of a group whose models it holds (the group it ran last first);
2. else an item of the largest group that no worker holds (or that uses no model of its own);
3. else an item of a group other workers hold, where they would take longer to finish it than a
   load costs: pending items / holders > the load's cost in items + 1. A load's cost is measured:
   an item that loaded its models, against one that did not; until both are measured it is taken
   to cost LOAD_GUESS items.
Otherwise it waits: the holders are busy with those items, so the batch goes on without it (a
worker never waits when nothing else is running: see `may_wait`).
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Hashable, Iterable
from statistics import median

from ..executor import ItemPlan

LOAD_GUESS = 4  # items


class Scheduler:
    def __init__(self, items: Iterable[ItemPlan]):
        self._pending: dict[frozenset, deque[ItemPlan]] = {}
        for item in items:
            self._pending.setdefault(item.models, deque()).append(item)
        self._held: dict[Hashable, list[frozenset]] = defaultdict(list)  # worker -> groups it ran, latest last
        self._loading: dict[Hashable, bool] = {}  # worker -> whether its current item loads its models
        self._with_load: list[float] = []  # seconds of items whose worker loaded their models first
        self._warm: list[float] = []  # ... and of items whose worker held them

    @property
    def pending(self) -> int:
        return sum(map(len, self._pending.values()))

    def next_for(self, worker: Hashable, may_wait: bool = True) -> ItemPlan | None:
        """The item `worker` runs next, or None if it should wait (only `may_wait`) or nothing is left."""
        group = self._choose(worker)
        if group is None and not may_wait and self._pending:
            group = max(self._pending, key=lambda g: len(self._pending[g]))
        if group is None:
            return None
        item = self._pending[group].popleft()
        if not self._pending[group]:
            del self._pending[group]
        held = self._held[worker]
        self._loading[worker] = group not in held
        if group in held:
            held.remove(group)
        held.append(group)  # from now on: the worker is loading it, or has
        return item

    def finished(self, worker: Hashable, seconds: float) -> None:
        """The item `worker` was given last ran in `seconds`."""
        (self._with_load if self._loading.pop(worker, False) else self._warm).append(seconds)

    def retry(self, item: ItemPlan) -> None:
        """Run `item` again (its worker died), before the others of its group."""
        self._pending.setdefault(item.models, deque()).appendleft(item)

    def lost(self, worker: Hashable) -> None:
        """`worker` died: whatever it held is gone (a restarted worker starts empty)."""
        self._held.pop(worker, None)
        self._loading.pop(worker, None)

    def _choose(self, worker: Hashable) -> frozenset | None:
        for group in reversed(self._held[worker]):
            if group in self._pending:
                return group
        holders = Counter(group for w, groups in self._held.items() if w != worker for group in groups if group)
        unheld = [group for group in self._pending if not holders[group]]
        if unheld:
            return max(unheld, key=lambda group: len(self._pending[group]))
        share = {group: len(self._pending[group]) / holders[group] for group in self._pending}
        best = max(share, key=share.__getitem__, default=None)
        return best if best is not None and share[best] > self._load_cost() + 1 else None

    def _load_cost(self) -> float:
        """What loading a group's models costs, in items."""
        if not self._with_load or not self._warm:
            return LOAD_GUESS
        warm = median(self._warm)
        return max(0.0, median(self._with_load) - warm) / warm if warm > 0 else LOAD_GUESS
