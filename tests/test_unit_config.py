"""zq.config: one frozen settings object with clear errors."""

import dataclasses
import datetime as dt

import pytest

from zq import App, ConfigurationError, Exchange, Queue, config
from zq.routing import declarations


def test_unknown_setting_is_refused_with_its_name():
    with pytest.raises(ConfigurationError, match="unknown setting.*task_serialiser"):
        config.from_mapping({"task_serialiser": "json"})


def test_app_refuses_an_unknown_setting():
    with pytest.raises(ConfigurationError, match="no_such_setting"):
        App("x", router="ipc:///nonexistent/zq", no_such_setting=1)


def test_conf_update_refuses_an_unknown_setting():
    app = App("x", router="ipc:///nonexistent/zq")
    with pytest.raises(ConfigurationError, match="bogus"):
        app.conf.update(bogus=True)


def test_settings_are_frozen():
    settings = config.from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.task_serializer = "json"


def test_defaults():
    settings = config.Settings()
    assert settings.task_serializer == "msgpack"
    assert settings.accept_content == ("msgpack", "json")
    assert settings.result_expires == 86400.0
    assert settings.router == "tcp://127.0.0.1:5555"


def test_values_are_coerced():
    settings = config.from_mapping({"accept_content": "json",
                                    "result_expires": dt.timedelta(hours=1)})
    assert settings.accept_content == ("json",)
    assert settings.result_expires == 3600.0


def test_replace_keeps_other_settings():
    settings = config.from_mapping({"task_serializer": "json"}).replace(task_acks_late=True)
    assert settings.task_serializer == "json" and settings.task_acks_late


def test_conf_reads_and_updates_settings():
    app = App("x", router="ipc:///nonexistent/zq", task_serializer="json")
    assert app.conf.task_serializer == app.conf["task_serializer"] == "json"
    app.conf.update({"task_serializer": "msgpack"})
    assert app.settings.task_serializer == "msgpack"


def test_router_from_argument_then_environment_then_default(monkeypatch):
    monkeypatch.setenv("ZQ_ROUTER", "ipc:///from/env")
    assert App(router="ipc:///given").settings.router == "ipc:///given"
    assert App().settings.router == "ipc:///from/env"
    monkeypatch.delenv("ZQ_ROUTER")
    assert App().settings.router == "tcp://127.0.0.1:5555"


# -- app.conf as Celery users write it ------------------------------------------------


def test_conf_attribute_assignment_replaces_the_settings():
    app = App("x", router="ipc:///nonexistent/zq")
    before = app.settings
    app.conf.task_always_eager = True
    assert app.settings.task_always_eager is True
    assert app.conf.task_always_eager is True
    assert before.task_always_eager is False, "settings stay one frozen object"


def test_conf_item_assignment_replaces_the_settings():
    app = App("x", router="ipc:///nonexistent/zq")
    app.conf["task_acks_late"] = True
    assert app.settings.task_acks_late is True
    assert app.conf["task_acks_late"] is True


def test_conf_assignment_makes_always_eager_take_effect():
    app = App("x", router="ipc:///nonexistent/zq")

    @app.task
    def add(x, y):
        return x + y

    app.conf.task_always_eager = True
    assert add.delay(2, 3).get() == 5


def test_conf_assignment_coerces_like_update():
    app = App("x", router="ipc:///nonexistent/zq")
    app.conf.accept_content = "json"
    app.conf["result_expires"] = dt.timedelta(minutes=1)
    assert app.settings.accept_content == ("json",)
    assert app.settings.result_expires == 60.0


@pytest.mark.parametrize("assign", [
    lambda conf: setattr(conf, "task_alwayz_eager", True),
    lambda conf: conf.__setitem__("task_alwayz_eager", True),
    lambda conf: conf.update(task_alwayz_eager=True),
], ids=["attribute", "item", "update"])
def test_conf_refuses_an_unknown_setting_however_it_is_set(assign):
    app = App("x", router="ipc:///nonexistent/zq")
    before = app.settings
    with pytest.raises(ConfigurationError, match="unknown setting.*task_alwayz_eager"):
        assign(app.conf)
    assert app.settings is before


def test_conf_reads_of_an_unknown_setting_fail():
    conf = App("x", router="ipc:///nonexistent/zq").conf
    with pytest.raises(AttributeError, match="bogus"):
        conf.bogus  # noqa: B018
    with pytest.raises(KeyError):
        conf["bogus"]
    assert conf.get("bogus", 7) == 7
    assert "task_acks_late" in conf and "bogus" not in conf


def test_conf_update_is_all_or_nothing():
    app = App("x", router="ipc:///nonexistent/zq")
    with pytest.raises(ConfigurationError):
        app.conf.update(task_acks_late=True, bogus=1)
    assert app.settings.task_acks_late is False


def test_conf_change_reroutes_the_next_task():
    app = App("x", router="ipc:///nonexistent/zq")
    assert app.task_message("t")[0]["queue"] == "celery"
    app.conf.task_default_queue = "elsewhere"
    assert app.task_message("t")[0]["queue"] == "elsewhere"


# -- settings that moved or that do not exist ------------------------------------------


def test_task_max_redeliveries_points_to_the_routers_option():
    with pytest.raises(ConfigurationError, match="router's --max-redeliveries"):
        App("x", router="ipc:///nonexistent/zq", task_max_redeliveries=5)
    app = App("x", router="ipc:///nonexistent/zq")
    with pytest.raises(ConfigurationError, match="router's --max-redeliveries"):
        app.conf.task_max_redeliveries = 5
    assert "task_max_redeliveries" not in {f.name for f in dataclasses.fields(config.Settings)}


def test_a_task_keeps_its_own_max_redeliveries_option():
    app = App("x", router="ipc:///nonexistent/zq")

    @app.task(acks_late=True, max_redeliveries=1)
    def poison():
        return None

    assert app.task_message(poison.name)[0]["max_redeliveries"] == 1


def test_bad_default_exchange_type_is_refused():
    with pytest.raises(ConfigurationError, match="task_default_exchange_type"):
        config.from_mapping({"task_default_exchange_type": "headers"})


# -- task_default_exchange / task_default_routing_key in declarations -----------------


def test_queues_without_exchange_or_key_bind_to_the_defaults():
    settings = config.from_mapping({"task_default_exchange": "tasks",
                                    "task_default_exchange_type": "topic",
                                    "task_default_routing_key": "task.default"})
    assert declarations([Queue("default", routing_key="task.#"), Queue("bare"),
                         Queue("own", Exchange("media"), routing_key="m.#")], settings) == [
        {"queue": "default", "exchange": "tasks", "type": "topic", "key": "task.#"},
        {"queue": "bare", "exchange": "tasks", "type": "topic", "key": "task.default"},
        {"queue": "own", "exchange": "media", "type": "direct", "key": "m.#"},
    ]


def test_without_defaults_a_queue_binds_to_an_exchange_of_its_name():
    settings = config.Settings()
    assert declarations([Queue("video")], settings) == declarations([Queue("video")]) == [
        {"queue": "video", "exchange": "video", "type": "direct", "key": "video"}]
    assert declarations(None, settings) == []


def test_with_a_default_exchange_and_no_task_queues_the_default_queue_is_bound_to_it():
    settings = config.from_mapping({"task_default_queue": "main",
                                    "task_default_exchange": "tasks"})
    assert declarations(None, settings) == [
        {"queue": "main", "exchange": "tasks", "type": "direct", "key": "main"}]
