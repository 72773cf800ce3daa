"""Start a router and two workers on this machine, send tasks, print what comes back.

    python examples/quickstart.py

Everything runs as real processes (``zq router``, ``zq workers``) on a private ipc://
endpoint, and is stopped at the end.
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zq import group  # noqa: E402
from zq.testing import Cluster  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="zq-quickstart-") as tmp, \
            Cluster(tmp, app="examples.tasks", concurrency=2, cwd=ROOT,
                    env={"PYTHONPATH": str(ROOT)}) as cluster:
        from examples.tasks import add, app, mul

        app.conf.update(router=cluster.router)
        print(f"router at {cluster.router}, {cluster.actor_count()} actor processes")

        print("add.delay(2, 3).get() ->", add.delay(2, 3).get(timeout=10))
        print("mul.apply_async((6, 7)).get() ->", mul.apply_async((6, 7)).get(timeout=10))

        chained = (add.s(2, 2) | mul.s(10)).delay()
        print("(add.s(2, 2) | mul.s(10)) ->", chained.get(timeout=10))

        result = add.delay(1, "x")
        try:
            result.get(timeout=10)
        except TypeError as exc:
            print(f"add.delay(1, 'x') raised on the client: TypeError({exc})")
        print("  its state:", result.state)

        watched = add.apply_async((40, 2), countdown=0.5)
        for event in app.watch([watched.id], timeout_s=5):
            print(f"  watch {watched.id[:8]}: {event['state']}")
            if event["state"] == "SUCCESS":
                break

        n = 2000
        start = time.perf_counter()
        values = group(add.s(i, i) for i in range(n)).apply_async().get(timeout=60)
        elapsed = time.perf_counter() - start
        assert values == [2 * i for i in range(n)]
        print(f"group of {n} add tasks: all results back in {elapsed:.2f}s "
              f"({n / elapsed:,.0f} tasks/s)")


if __name__ == "__main__":
    main()
