"""Credit and queues: which waiting task goes to which actor.

An actor announces credit (how many tasks it may hold: its prefetch); each task handed to
it takes one, each DONE gives one back. Behind short tasks the router stacks more than the
credit (see :mod:`.pace`). A dispatch round hands one task per hungry actor in turn, so
work spreads evenly, and what one actor gets in a round travels in one message.
"""

from __future__ import annotations

from collections.abc import Callable

from .book import INFLIGHT, Entry, TaskQueue
from .pace import Pace
from .peers import ActorState

# Takes the next entry popped from a queue for an actor; False when it may not run now
# (it expired, or waits for its turn under a rate limit) and was dealt with.
Admit = Callable[[Entry], bool]


class Dispatch:
    def __init__(self, pace: Pace | None = None,
                 runnable: Callable[[Entry], bool] = lambda entry: True) -> None:
        self.queues: dict[str, TaskQueue] = {}
        self.hungry: dict[bytes, ActorState] = {}
        self.pace = pace or Pace()
        # Whether some connected actor of the entry's queue has its task (see next_for).
        self.runnable = runnable
        # Tasks handed out granted (stacked behind short ones), since the start.
        self.granted = 0

    def push(self, entry: Entry, *, front: bool = False) -> None:
        queue = self.queues.get(entry.queue)
        if queue is None:
            queue = self.queues[entry.queue] = TaskQueue(entry.queue)
        queue.push(entry, front=front)

    def discard(self, entry: Entry) -> None:
        """Take a queued entry out of its queue."""
        self.queues[entry.queue].discard(entry)

    def depth(self, name: str) -> int:
        queue = self.queues.get(name)
        return queue.size + queue.parked_count if queue is not None else 0

    def unpark(self, actor: ActorState) -> int:
        """An actor announced itself: what was parked in its queues for want of an actor
        that has those tasks goes back to the front, where it has them."""
        count = 0
        for name in actor.queues:
            queue = self.queues.get(name)
            if queue is not None and queue.parked:
                count += queue.unpark(actor.runs)
        return count

    def update(self, actor: ActorState) -> bool:
        """Note the actor's credit; returns whether it can take work now."""
        if actor.taking and (actor.credit > 0 or self._room(actor, None)):
            self.hungry[actor.identity] = actor
            return True
        self.hungry.pop(actor.identity, None)
        return False

    def forget(self, identity: bytes) -> None:
        self.hungry.pop(identity, None)

    def limit(self, actor: ActorState) -> int:
        """How many tasks the actor may hold, given what it holds: worked out again only
        when the figures changed (a name's depth shrank) or it held nothing in between;
        meanwhile each task stacked lowers it (see ``round``), and one that ends leaves it
        as it is, which errs on the side of stacking less."""
        if not actor.depth or actor.depth_version != self.pace.version:
            actor.depth = self.pace.depth(e.name for e in actor.inflight.values())
            actor.depth_version = self.pace.version
        return actor.depth

    def _room(self, actor: ActorState, entry: Entry | None) -> bool:
        """Whether ``entry`` (any short task, when None) may be stacked on what the actor
        holds beyond its credit: it holds something, and all of it and ``entry`` are short
        and fit in its depth."""
        if not actor.inflight:
            return False
        limit = self.limit(actor)
        if entry is not None:
            limit = min(limit, self.pace.depth_of(entry.name))
        return len(actor.inflight) < limit

    def _granted(self, actor: ActorState, entry: Entry) -> bool:
        """Whether the actor may start ``entry`` before its DONEs before it are confirmed:
        it is short and held behind short tasks only."""
        return bool(actor.inflight) and self.pace.short(entry.name) and self.limit(actor) > 1

    def round(self, admit: Admit) -> dict[bytes, list[Entry]]:
        """Hand out tasks one per hungry actor per pass until nothing more fits; returns
        what each actor got, in order."""
        batches: dict[bytes, list[Entry]] = {}
        progress = True
        while progress and self.hungry:
            progress = False
            for actor in list(self.hungry.values()):
                entry = self.next_for(actor, admit)
                if entry is None:
                    if actor.credit <= 0:
                        del self.hungry[actor.identity]  # nothing short to stack
                    continue
                progress = True
                if self._granted(actor, entry):
                    actor.granted.add(entry.key)
                    self.granted += 1
                if actor.inflight:
                    actor.depth = min(self.limit(actor), self.pace.depth_of(entry.name))
                entry.state = INFLIGHT
                actor.inflight[entry.key] = entry
                batches.setdefault(actor.identity, []).append(entry)
                actor.credit -= 1
                if actor.credit <= 0 and not self._room(actor, None):
                    del self.hungry[actor.identity]
        return batches

    def next_for(self, actor: ActorState, admit: Admit) -> Entry | None:
        """The next task for ``actor``: its queues are served in rotation, one task from
        each in turn (as Celery consumes several queues), priority first within one.
        Only a task it has is taken: one another actor of the queue has waits at the front
        for that one; one that no actor of the queue has is parked. Beyond its credit only
        a task that may be stacked (see ``_room``) is taken; the one that may not stays at
        the front of its queue."""
        stacking = actor.credit <= 0
        names = actor.queues
        count = len(names)
        for offset in range(count):
            index = (actor.turn + offset) % count
            queue = self.queues.get(names[index])
            while queue is not None and queue.size:
                entry = queue.pop()
                if entry is None:
                    break
                if not actor.runs(entry.name):
                    if self.runnable(entry):
                        # Another actor of the queue has it: it waits at the front for that
                        # one, and this actor is served from its other queues.
                        queue.push(entry, front=True)
                        break
                    queue.park(entry)  # none has it: set aside until one does
                    continue
                if stacking and not self._room(actor, entry):
                    queue.push(entry, front=True)
                    break
                if not admit(entry):
                    continue
                actor.turn = (index + 1) % count
                return entry
        return None
