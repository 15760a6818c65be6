"""Fixtures for the edge daemon tests: the fixture model, a private Mosquitto, subscribers, daemons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FIXTURE_MODEL, Daemon, Subscriber

from digitspot.edge.devtools.local_broker import LocalBroker


@pytest.fixture(scope="session")
def fixture_model() -> Path:
    return FIXTURE_MODEL


@pytest.fixture(scope="session")
def e2e_model() -> Path:
    """The model for accuracy-checking tests: the committed fixture (so tests never need training),
    or DIGITSPOT_TEST_MODEL to run the same tests against another artifact (e.g. the shipped one)."""
    return Path(os.environ.get("DIGITSPOT_TEST_MODEL", FIXTURE_MODEL))


@pytest.fixture
def broker(tmp_path):
    b = LocalBroker(workdir=tmp_path / "broker")
    b.start()
    yield b
    b.close()


@pytest.fixture
def subscriber_factory():
    made: list[Subscriber] = []

    def make(host: str, port: int, topics: list[str], **kw) -> Subscriber:
        s = Subscriber(host, port, topics, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def daemon_factory(tmp_path):
    made: list[Daemon] = []

    def make(args: list[str], **kw) -> Daemon:
        d = Daemon(args, tmp_path, name=f"daemon{len(made)}", **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
