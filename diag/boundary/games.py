"""ALE games as users name them, and the action set a policy must match before any episode is played.

Users write a game the way their training library did: ``pong``, ``Pong``, ``ALE/Pong-v5``,
``PongNoFrameskip-v4`` (gymnasium ids), ``road_runner`` or ``RoadRunner``. All resolve to ale-py's ROM id; an
unknown name is one line listing close matches instead of ale-py's assertion and traceback.

A policy plays with the game's minimal action set (what ``*NoFrameskip-v4``, ``ALE/*-v5`` and CleanRL/SB3 Atari
training use unless told otherwise) or, when asked, the full 18-action set. Its number of outputs must equal the
set's size: ale-py blocks forever on an action outside the set, and a policy of another game with the same count
would play nonsense.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from diag.errors import DiagError

_GYM_SUFFIX = re.compile(r"(NoFrameskip|Deterministic)?-v\d+$")


@functools.cache
def _roms() -> dict[str, str]:
    """Separator-free lower-case key -> ROM id (``roadrunner`` -> ``road_runner``)."""
    from ale_py.roms import get_all_rom_ids

    return {rom.replace("_", ""): rom for rom in get_all_rom_ids()}


def resolve_game(name: str) -> str:
    """ale-py's ROM id for a game named as a user or a gymnasium id writes it."""
    text = name.strip()
    text = text.removeprefix("ALE/")
    text = _GYM_SUFFIX.sub("", text)
    key = re.sub(r"[\s_\-]", "", text).lower()
    roms = _roms()
    if key in roms:
        return roms[key]
    close = difflib.get_close_matches(key, roms, n=4, cutoff=0.6)
    hint = (f"close matches: {', '.join(roms[c] for c in close)}" if close
            else f"ale-py knows {len(roms)} games, e.g. pong, breakout, road_runner")
    raise DiagError(f"unknown game {name!r}: {hint}")


@dataclass(frozen=True)
class ActionSet:
    game: str
    full: bool
    names: tuple[str, ...]

    def describe(self) -> str:
        return f"{'full' if self.full else 'minimal'} ({len(self.names)} actions: {', '.join(self.names)})"


@functools.cache
def action_set(game: str, full: bool = False) -> ActionSet:
    """The actions a policy's outputs index, read from the ROM (about 0.1 s, no environment started)."""
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path(game))
    actions = ale.getLegalActionSet() if full else ale.getMinimalActionSet()
    return ActionSet(game, full, tuple(a.name for a in actions))


def check_actions(policy_name: str, n_actions: int, actions: ActionSet) -> None:
    """Refuse a policy whose outputs do not index exactly this action set (one line, before any episode)."""
    if n_actions == len(actions.names):
        return
    kind = "full" if actions.full else "minimal"
    hint = ""
    if not actions.full and n_actions == 18:
        hint = ", or with the full action set (then set full_action_space / --full-action-space)"
    raise DiagError(f"policy {policy_name} has {n_actions} actions but {actions.game}'s {kind} action set has "
                    f"{len(actions.names)} ({', '.join(actions.names)}): was it trained on another game{hint}?")
