"""Rooms: who is in a call, so that each browser can subscribe to everyone else's avatar.

A room is only a list of participants; the media relay is the broadcast of each participant's session. Browsers
poll `GET /rooms/{name}` (a version number tells them whether anything changed) and open one receive-only peer
connection per other participant: joining or leaving never renegotiates anybody else's connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ideal.avatar.errors import InputError
from ideal.server.config import ROOM_NAME


def check_room_name(name: str) -> str:
    if not isinstance(name, str) or not ROOM_NAME.fullmatch(name):
        raise InputError(f"room {name!r}: invalid name", "use 1-64 letters, digits, '_', '.', '-'")
    return name


@dataclass
class Participant:
    id: str  # the peer id of the participant's publishing connection
    name: str
    avatar: str
    joined: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "avatar": self.avatar, "joined": self.joined}


@dataclass
class Room:
    name: str
    participants: dict[str, Participant] = field(default_factory=dict)
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"room": self.name, "version": self.version,
                "participants": [p.to_dict() for p in self.participants.values()]}


class RoomRegistry:
    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}

    def join(self, room: str, participant: Participant) -> Room:
        r = self._rooms.setdefault(check_room_name(room), Room(room))
        r.participants[participant.id] = participant
        r.version += 1
        return r

    def leave(self, room: str, participant_id: str) -> None:
        r = self._rooms.get(room)
        if r is None or participant_id not in r.participants:
            return
        del r.participants[participant_id]
        r.version += 1
        if not r.participants:
            del self._rooms[room]  # an empty room leaves nothing behind

    def get(self, room: str) -> Room:
        """The room, or an empty one (a browser may poll a room before anybody has joined it)."""
        return self._rooms.get(check_room_name(room)) or Room(room)

    def __len__(self) -> int:
        return len(self._rooms)
