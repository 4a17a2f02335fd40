"""OverSIP's logging API on loguru: levels, log_id, the console line format."""

from __future__ import annotations

import io
import re

import pytest
from loguru import logger

from oversip_hooks import LEVELS, Logger, add_console_sink, get_logger

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "


@pytest.fixture
def console():
    stream = io.StringIO()
    sink = add_console_sink(stream, level="debug")
    yield stream
    logger.remove(sink)


def lines(stream: io.StringIO) -> list[str]:
    return [re.sub(f"^{TIME}", "", line) for line in stream.getvalue().splitlines()]


class Server(Logger):
    log_id = "server"


def test_console_lines_read_as_in_oversip(console):
    Server().log_system_notice("server is up")
    Server().log_info("hello")
    assert lines(console) == ["NOTICE: <server> server is up", "INFO: <server> [user] hello"]
    assert re.match(TIME, console.getvalue())


@pytest.mark.parametrize("level", list(LEVELS))
def test_every_level_has_a_system_and_a_user_method(console, level):
    log = get_logger("mod")
    getattr(log, f"log_system_{level}")("system line")
    getattr(log, f"log_{level}")("user line")
    assert lines(console) == [
        f"{level.upper()}: <mod> system line",
        f"{level.upper()}: <mod> [user] user line",
    ]


def test_log_id_defaults_to_the_class_name_and_may_be_a_property(console):
    class Pool(Logger):
        pass

    class Connection(Logger):
        def __init__(self, number: int) -> None:
            self.number = number

        @property
        def log_id(self) -> str:
            return f"connection {self.number}"

    Pool().log_system_info("default")
    Connection(3).log_system_info("property")
    assert lines(console) == ["INFO: <Pool> default", "INFO: <connection 3> property"]


def test_records_go_through_loguru_with_log_id_in_extra():
    seen = []
    sink = logger.add(seen.append, level=0, format="{message}")
    try:
        get_logger("SQLite module").log_system_warn("slow query")
        get_logger("SQLite module").log_error("user error")
    finally:
        logger.remove(sink)
    records = [message.record for message in seen]
    assert [(r["level"].name, r["extra"]["log_id"], r["extra"]["user"]) for r in records] == [
        ("WARN", "SQLite module", False),
        ("ERROR", "SQLite module", True),
    ]
    assert records[0]["message"] == "slow query"


def test_an_exception_is_logged_with_its_type_and_traceback(console):
    try:
        {}["missing"]
    except KeyError as exc:
        get_logger("mod").log_system_error(exc)
    text = lines(console)
    assert text[0] == "ERROR: <mod> 'missing' (KeyError)"
    assert text[1] == "| Traceback (most recent call last):"
    assert text[-1] == "| KeyError: 'missing'"


def test_braces_and_angle_brackets_in_messages_are_kept(console):
    get_logger("mod").log_system_info("{not a field} <red>not a colour</red>")
    assert lines(console) == ["INFO: <mod> {not a field} <red>not a colour</red>"]


def test_the_console_level_filters(console):
    stream = io.StringIO()
    sink = add_console_sink(stream, level="crit")
    try:
        log = get_logger("mod")
        log.log_system_error("dropped")
        log.log_system_crit("kept")
        log.log_system_emerg("kept too")
    finally:
        logger.remove(sink)
    assert lines(stream) == ["CRIT: <mod> kept", "EMERG: <mod> kept too"]


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown log level 'verbose'; expected one of debug"):
        add_console_sink(io.StringIO(), level="verbose")
    with pytest.raises(TypeError, match="non-empty str log_id"):
        get_logger("")
