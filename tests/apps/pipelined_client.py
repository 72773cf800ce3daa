"""A client that sends tasks without waiting for each answer, for the fault tests:
``python -m tests.apps.pipelined_client ROUTER LOG COUNT``.

It writes ``sent <id>`` before each ``delay()``, and after every 50 ``flush()`` (which
returns once the router confirmed everything sent so far) ``confirmed <id>`` for each of
them, one line each, flushed, so that a test killing it knows exactly what the router had
confirmed and what it may not have seen.
"""

from __future__ import annotations

import sys

from tests.apps import faults


def main() -> None:
    router, log, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    faults.app.conf.update(router=router, publish_timeout_s=30.0)
    batch: list[str] = []
    for i in range(count):
        result = faults.quick.delay(log, i)
        print(f"sent {result.id}", flush=True)
        batch.append(result.id)
        if len(batch) == 50:
            faults.app.flush(60)
            print("\n".join(f"confirmed {task_id}" for task_id in batch), flush=True)
            batch = []
    faults.app.flush(60)
    print("\n".join(f"confirmed {task_id}" for task_id in batch), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
