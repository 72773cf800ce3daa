"""A progress bar from a custom state: ``self.update_state(state="PROGRESS", meta=...)``.

    python examples/progress.py
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zq import App  # noqa: E402

app = App("examples.progress")


@app.task(bind=True, track_started=True)
def crunch(self, total):
    for done in range(1, total + 1):
        time.sleep(0.05)
        self.update_state(state="PROGRESS", meta={"done": done, "total": total})
    return f"crunched {total} chunks"


def main() -> None:
    from zq.testing import Cluster

    with tempfile.TemporaryDirectory() as tmp, \
            Cluster(tmp, app="examples.progress", concurrency=1) as cluster:
        app.conf.update(router=cluster.router)
        result = crunch.delay(10)
        for event in app.watch([result.id], timeout_s=20):
            if event["state"] == "PROGRESS":
                done, total = event["info"]["done"], event["info"]["total"]
                print(f"[{'#' * done}{'.' * (total - done)}] {done}/{total}")
            else:
                print(event["state"])
            if event["state"] == "SUCCESS":
                break
        print(result.get(timeout=10))


if __name__ == "__main__":
    main()
