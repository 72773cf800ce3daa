"""An app that accepts pickle on both sides: ``zq workers -A tests.apps.pickled``."""

from zq import App

app = App("pickled", accept_content=["pickle", "msgpack", "json"], result_serializer="pickle")


@app.task
def double(value):
    return value * 2
