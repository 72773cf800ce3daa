"""What the router keeps on disk: journal commits (and refusing tasks while they fail),
the replay on start, and the exchange bindings. The loop calls these; the rules they
apply to are the core's."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import protocol
from . import intake
from .book import Entry
from .core import Core
from .durable import JOURNAL_RETRY_S
from .journal import Journal

logger = logging.getLogger("zq.router")


def commit(core: Core, journal: Journal, now: float, retry: bool = False) -> None:
    """Write the journal's records. Tasks whose records could not be written are refused,
    never answered ACCEPTED; while it fails new ones are refused at once, and the write is
    tried again every JOURNAL_RETRY_S (or now, with ``retry``)."""
    durable = core.durable
    if not (retry or durable.due(now)):
        return
    before = durable.failure
    written = journal.commit()
    refused = durable.committed(written, failure(journal), now)
    if refused:
        intake.unwritten(core, refused, durable.failure or "journal not written")
    if durable.failure != before:
        changed(core, journal, before)


def failure(journal: Journal) -> str | None:
    """Why the journal cannot be written now, as one line, or None."""
    error = journal.write_error
    if error is None:
        return None
    return f"journal {journal.path}: {error.strerror or error}"


def changed(core: Core, journal: Journal, before: str | None) -> None:
    """Log a change of the journal's state: once, not once per task refused."""
    now_failing = core.durable.failure
    if now_failing is not None:
        logger.error("%s: refusing new tasks until it can be written (trying again every "
                     "%.0f s); serving the %d tasks held", now_failing, JOURNAL_RETRY_S,
                     len(core.book.tasks))
    elif before is not None:
        logger.warning("journal %s is written again: taking new tasks", journal.path)


def replay(core: Core, journal: Journal) -> int:
    """Open the journal and put back what it holds: revoked ids, the results not known to
    be stored, sent again (the results actor keeps the first final state of an attempt),
    and the accepted tasks not finished (returns how many), with the chord parts counted
    for them: those are counted before the tasks are placed, so that a body whose chord
    is decided is released as it is placed."""
    replayed = journal.open()
    for task_id in replayed.revoked:
        core.book.revoke(task_id, record=False)
    for key in replayed.finished:
        core.book.remember_finished(key)
    if replayed.unstored:
        # Before any event of this start (a task expired meanwhile), in sequence order.
        logger.info("sending %d results the results actor may not have stored",
                    len(replayed.unstored))
        for seq, event in replayed.unstored:
            core.keep_unstored(seq, event)
        core.events.extend(core.unstored.values())
    entries = [Entry(protocol.unpack(raw_header), raw_header, body)
               for raw_header, body in replayed.live]
    for entry in entries:
        core.book.track(entry)
    if replayed.parts:
        logger.info("replayed %d chord parts that ended", len(replayed.parts))
        core.restore_parts(replayed.parts)
    now = time.time()
    for entry in entries:
        core.place(entry, now)
    if replayed.live:
        logger.info("replayed %d accepted tasks from the journal", len(replayed.live))
    return len(replayed.live)


def load_bindings(core: Core, path: Path) -> None:
    if path.exists():
        try:
            core.bindings.declare(protocol.unpack(path.read_bytes()))
        except Exception as exc:
            logger.error("ignoring unreadable %s: %s", path, exc)


def save_bindings(core: Core, path: Path) -> None:
    core.bindings_changed = False
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_bytes(protocol.pack(core.bindings.to_list()))
        tmp.replace(path)
    except OSError as exc:
        # They hold in memory; clients declare them again after a restart.
        logger.error("cannot save the bindings to %s: %s", path, exc.strerror or exc)
        tmp.unlink(missing_ok=True)
