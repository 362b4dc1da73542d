"""The widgets' throttle: the newest value shown at once when the interval is over, else once when it is."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui

from napari_m2mrf.widgets.throttle import Throttle  # noqa: E402


def test_offers_inside_the_interval_show_the_newest_once_when_it_is_over(qtbot) -> None:
    shown: list[int] = []
    throttle: Throttle[int] = Throttle(0.2, lambda value: shown.append(value) is None)
    throttle.offer(1)  # the first offer: nothing shown yet, so at once
    throttle.offer(2)
    throttle.offer(3)
    assert shown == [1]
    qtbot.waitUntil(lambda: shown == [1, 3], timeout=2000)
    throttle.offer(4, at_once=True)
    assert shown == [1, 3, 4]


def test_a_dropped_value_is_not_shown_and_a_gone_widget_does_not_restart_the_interval(qtbot) -> None:
    shown: list[int] = []
    throttle: Throttle[int] = Throttle(0.1, lambda value: shown.append(value) is None and value != 1)
    throttle.offer(1)  # "the widget is gone": shown is called, but the interval does not start
    throttle.offer(2)
    assert shown == [1, 2]
    throttle.offer(3)
    throttle.drop()
    qtbot.wait(300)
    assert shown == [1, 2]
