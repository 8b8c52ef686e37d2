"""Where a client goes after a node went silent (client/channel.py Endpoints): it does not
follow the other nodes' leader hint back to that node, and moving on passes it by, for
DOWN_S. Before, a client whose leader froze went back to it on the first stale hint and
waited a whole attempt (3 s) there."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from quicraft.client.channel import Endpoints

A, B, C = ("10.0.0.1", 7400), ("10.0.0.2", 7400), ("10.0.0.3", 7400)


class Silent:
    """Stands for a Channel that its watchdog closed: the node sent nothing."""

    silent = True

    def close(self, reason: str) -> None:
        pass


def test_a_silent_node_is_passed_by_and_not_followed_back_to() -> None:
    async def scenario() -> None:
        link = Endpoints([A, B, C], cast(Any, None), cast(Any, None))
        link.channel = cast(Any, Silent())  # talking to A, which went silent
        link.move_on(link.channel)
        assert link.current_endpoint == "10.0.0.2:7400"
        assert not link.go_to("10.0.0.1:7400")  # B still names A as its leader: stale
        assert link.current_endpoint == "10.0.0.2:7400"
        link.move_on(None)  # B could not be reached either: C is next, not A
        assert link.current_endpoint == "10.0.0.3:7400"
        assert link.go_to("10.0.0.4:7400")  # a new leader is followed
        assert link.current_endpoint == "10.0.0.4:7400"

    asyncio.run(scenario())


def test_once_down_s_has_passed_the_node_is_followed_again(monkeypatch: Any) -> None:
    async def scenario() -> None:
        link = Endpoints([A, B], cast(Any, None), cast(Any, None))
        link.channel = cast(Any, Silent())
        link.move_on(link.channel)
        monkeypatch.setattr("quicraft.client.channel.DOWN_S", 0.0)
        assert link.go_to("10.0.0.1:7400") and link.current_endpoint == "10.0.0.1:7400"

    asyncio.run(scenario())
