"""Which processors of one pipeline are switched on: the frame server's "exclude processors that are
not required".

A processor that has seen, say, a game menu can switch the HUD readers off until the game is
back, through :meth:`ProcessContext.disable` / :meth:`ProcessContext.enable`. The state lives
here, one object per pipeline, so the switches of one session never touch another's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["Switches"]


class Switches:
    """On/off state of a fixed set of processor names; every name starts on unless listed.

    Asking about, or switching, a name that is not in the set raises ``ValueError`` naming the
    known ones: a typo in a plugin must fail loudly, not switch nothing forever.
    """

    __slots__ = ("_disabled", "_names")

    def __init__(self, names: Sequence[str], disabled: Iterable[str] = ()) -> None:
        self._names = tuple(names)
        self._disabled: set[str] = set()
        for name in disabled:
            self.disable(name)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def disabled(self) -> frozenset[str]:
        """The names switched off now."""
        return frozenset(self._disabled)

    def _check(self, name: str) -> str:
        if name not in self._names:
            known = ", ".join(repr(n) for n in self._names) or "none"
            raise ValueError(f"no processor named {name!r} in this pipeline; known: {known}")
        return name

    def is_enabled(self, name: str) -> bool:
        return self._check(name) not in self._disabled

    def enable(self, name: str) -> None:
        self._disabled.discard(self._check(name))

    def disable(self, name: str) -> None:
        self._disabled.add(self._check(name))

    def set_disabled(self, names: Iterable[str]) -> None:
        """Switch off exactly ``names`` and on every other; all are checked before any change."""
        wanted = {self._check(n) for n in names}
        self._disabled = wanted
