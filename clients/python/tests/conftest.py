"""conftest.py - fixtures for the client tests, which run against a real
sandboxd broker: tests/e2e/test_pyclient.py starts one and passes

  SANDBOXD_URL        the broker's base URL
  SANDBOXD_TOKEN      a token of tenant alice
  SANDBOXD_TOKEN_BOB  a token of tenant bob (for the isolation checks)

Without SANDBOXD_URL every test is skipped (there is nothing to test
against); the wrapper counts such a skip as a failure."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any, Callable, Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sandboxd import Sandbox, SandboxError, SandboxManager  # noqa: E402

NO_ROUTE = "no such route"


def _env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        pytest.skip("%s is not set: run through tests/e2e/test_pyclient.py, which starts a broker" % name)
    return v


@pytest.fixture(scope="session")
def broker_url() -> str:
    return _env("SANDBOXD_URL")


@pytest.fixture(scope="session")
def token() -> str:
    return _env("SANDBOXD_TOKEN")


@pytest.fixture(scope="session")
def manager(broker_url: str, token: str) -> Iterator[SandboxManager]:
    with SandboxManager(broker_url, token) as m:
        yield m


@pytest.fixture(scope="session")
def sandbox(manager: SandboxManager) -> Iterator[Sandbox]:
    """One sandbox shared by the tests that do not need a fresh one."""
    sb = manager.create_or_get_sandbox("pyc-" + secrets.token_hex(4))
    yield sb
    sb.delete()


@pytest.fixture
def fresh_sandbox(manager: SandboxManager) -> Iterator[Sandbox]:
    """A sandbox of its own, deleted after the test."""
    sb = manager.create_or_get_sandbox("pyc-" + secrets.token_hex(4))
    yield sb
    try:
        sb.delete()
    except SandboxError as e:
        if e.status != 404:
            raise


def unique(prefix: str = "t") -> str:
    return "%s-%s" % (prefix, secrets.token_hex(4))


def route_or_skip(what: str, fn: Callable[[], Any]) -> Any:
    """fn(); but when the broker answers 404 "no such route" (the endpoint
    is not in this build yet), skip the test saying so."""
    try:
        return fn()
    except SandboxError as e:
        if e.status == 404 and e.code == "not_found" and e.message == NO_ROUTE:
            pytest.skip("%s: this broker has no such route yet (404 no such route)" % what)
        raise
