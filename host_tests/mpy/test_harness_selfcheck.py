# Checks the test bridge itself: a failing MicroPython-side test must be reported as a failure.
import sys


def test_runs_on_expected_port():
    impl = sys.implementation.name
    assert impl in ("micropython", "cpython"), impl


async def test_async_test_is_awaited():
    import asyncio

    await asyncio.sleep(0)
    assert True


def test_fixture_values_arrive(tmp_path_str):
    assert isinstance(tmp_path_str, str) and tmp_path_str.startswith("/")
