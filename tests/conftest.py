# -- engine tests (tests/test_engine_*.py) ------------------------------------------
import pytest as _pytest_engine


@_pytest_engine.fixture
def anyio_backend() -> str:
    return "asyncio"
