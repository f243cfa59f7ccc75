"""The one clock every part of callschedule reads.

It reads :func:`time.time` at call time (never a reference captured at import), so freezegun's
``freeze_time`` freezes the scheduler, its rules and its worker together.
"""

from __future__ import annotations

import time

import attrs


@attrs.frozen
class Clock:
    """Wall-clock time in the units the contract uses: seconds for schedules, milliseconds for events."""

    def now(self) -> float:
        """Seconds since the Unix epoch, as a float."""
        return time.time()

    def now_s(self) -> int:
        """Whole seconds since the Unix epoch."""
        return int(time.time())

    def now_ms(self) -> int:
        """Whole milliseconds since the Unix epoch."""
        return int(time.time() * 1000)
