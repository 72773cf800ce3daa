"""Routing as in Celery's guide: video, image and low-priority work on their own queues.

    python examples/routing.py

``task_queues`` binds the video and image queues to a topic exchange, and the video and
lowpri queues to a fanout exchange (a task sent to it runs once in each); ``task_routes``
sends tasks by name; a worker started with ``-Q`` consumes only those queues.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zq import App, Exchange, Queue  # noqa: E402

media = Exchange("media", type="topic")
everyone = Exchange("everyone", type="fanout")
app = App(
    "examples.routing",
    task_queues=[Queue("video", media, routing_key="video.#"),
                 Queue("image", media, routing_key="image.#"),
                 Queue("lowpri"),
                 Queue("video", everyone),
                 Queue("lowpri", everyone)],
    task_routes={"examples.routing.compress_video": {"queue": "video"},
                 "examples.routing.*_image": {"queue": "image"},
                 "examples.routing.tidy_up": {"queue": "lowpri"}},
)


@app.task
def compress_video(name):
    return f"video {name} compressed by pid {os.getpid()}"


@app.task
def resize_image(name):
    return f"image {name} resized by pid {os.getpid()}"


@app.task
def tidy_up():
    return f"tidied by pid {os.getpid()}"


@app.task(bind=True)
def reload_config(self, log):
    """Sent to the fanout exchange: every queue bound to it runs its own copy."""
    line = f"config reloaded for queue {self.request.delivery_info['queue']}\n"
    with open(log, "a") as f:
        f.write(line)


def main() -> None:
    from zq.testing import Cluster

    with tempfile.TemporaryDirectory() as tmp, \
            Cluster(tmp, app="examples.routing", concurrency=1,
                    workers_args=["-Q", "video,image"]) as cluster:
        app.conf.update(router=cluster.router)
        print(compress_video.delay("cat.mp4").get(timeout=10))
        print(resize_image.delay("cat.png").get(timeout=10))
        by_key = app.send_task("examples.routing.resize_image", ["dog.png"],
                               exchange="media", routing_key="image.png.resize")
        print("by exchange and routing key:", by_key.get(timeout=10))

        waiting = tidy_up.delay()
        print("lowpri has no worker yet; state:", waiting.state)
        cluster.start_workers("-Q", "lowpri", concurrency=1)
        print(waiting.get(timeout=10))

        log = Path(tmp) / "reloads"
        reload_config.apply_async((str(log),), exchange="everyone").get(timeout=10)
        cluster.wait_for(lambda stats: stats["tasks"] == 0, "both copies to finish")
        print("".join(sorted(log.read_text().splitlines(keepends=True))), end="")


if __name__ == "__main__":
    main()
