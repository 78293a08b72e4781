# -- engine tests (tests/test_engine_*.py) ------------------------------------------
import pytest as _pytest_engine


@_pytest_engine.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- HTTP API, client and CLI tests (tests/test_http_*.py, tests/test_cli.py) ---------
from tests.support.http_fixtures import (  # noqa: E402, F401
    http,
    idle_http,
    idle_server,
    keyed_server,
    make_server,
    server,
)

# -- tests on both stores: ``stores`` makes SQLite or Redis stores sharing their data ---
from tests.support.store_fixtures import shared_redis, stores  # noqa: E402, F401

# -- browser tests (tests/test_ui*.py): Playwright and Debian's Chromium ----------------
from tests.support.ui_fixtures import browser, new_page, playwright  # noqa: E402, F401
