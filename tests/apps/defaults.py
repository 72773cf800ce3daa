"""An app whose settings give every task its defaults: ``-A tests.apps.defaults``.

Routing as in Celery's routing guide: a topic exchange ``tasks`` that a task nothing
routes goes to with the key ``task.default``, bound to the queue ``default`` by
``task.#`` and to ``feed_tasks`` by ``feed.#``. And an app-wide hard time limit.
"""

import os
import time
from pathlib import Path

from zq import App, Queue

TIME_LIMIT_S = 1.0

app = App(
    "defaults",
    task_default_queue="default",
    task_default_exchange="tasks",
    task_default_exchange_type="topic",
    task_default_routing_key="task.default",
    # Declared without an exchange: bound to task_default_exchange, as in Celery.
    task_queues=[Queue("default", routing_key="task.#"),
                 Queue("feed_tasks", routing_key="feed.#")],
    task_time_limit=TIME_LIMIT_S,
)


@app.task(bind=True)
def where(self):
    """How this call was routed, and the limit it runs under."""
    delivery = self.request.delivery_info
    return {"queue": delivery.get("queue"), "exchange": delivery.get("exchange"),
            "routing_key": delivery.get("routing_key"), "time_limit": self.request.time_limit}


@app.task
def sleeper(pid_path, seconds):
    Path(pid_path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "woke"


@app.task(time_limit=30)
def patient(seconds):
    """Its own limit beats the app-wide one."""
    time.sleep(seconds)
    return "done"
