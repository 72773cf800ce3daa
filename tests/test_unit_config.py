"""zq.config: one frozen settings object with clear errors."""

import dataclasses
import datetime as dt

import pytest

from zq import App, ConfigurationError, config


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
