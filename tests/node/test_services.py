import pytest
import trio
import trio.testing

from node.services import Services


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_crashing_service_restarts_with_backoff(autojump_clock):
    runs = []

    async def flaky():
        runs.append(trio.current_time())
        if len(runs) < 4:
            raise RuntimeError(f"crash {len(runs)}")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        services = Services(nursery, restart_delay=1.0)
        services.start("flaky", flaky)
        await trio.sleep(100)
        (state,) = services.snapshot()
        assert state["state"] == "running"
        assert state["restarts"] == 3
        assert state["last_error"] == "RuntimeError: crash 3"
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert gaps == [1.0, 2.0, 4.0]


async def test_finished_service_not_restarted(autojump_clock):
    runs = []

    async def once():
        runs.append(1)

    async with trio.open_nursery() as nursery:
        services = Services(nursery, restart_delay=1.0)
        services.start("once", once)
        await trio.sleep(10)
        assert services.snapshot()[0]["state"] == "stopped"
        nursery.cancel_scope.cancel()
    assert runs == [1]


async def test_duplicate_name_rejected(autojump_clock):
    async with trio.open_nursery() as nursery:
        services = Services(nursery, restart_delay=1.0)
        services.start("a", trio.sleep_forever)
        with pytest.raises(ValueError, match="already running"):
            services.start("a", trio.sleep_forever)
        nursery.cancel_scope.cancel()


async def test_cancel_stops_service_without_restart(autojump_clock):
    async with trio.open_nursery() as nursery:
        services = Services(nursery, restart_delay=1.0)
        services.start("a", trio.sleep_forever)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert services.snapshot()[0]["state"] == "stopped"
    assert services.snapshot()[0]["restarts"] == 0
