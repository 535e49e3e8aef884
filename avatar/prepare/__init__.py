"""`ideal prepare`: a talking-head video -> a dataset dir (tracking, pose, expressions, audio, masks, plate).

`track_clip` (tracking + pose + expressions + audio on the frame clock) is the reusable core; heavy
dependencies (mediapipe, cv2, av) are imported lazily so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["track_clip", "TrackedClip", "TrackConfig"]

if TYPE_CHECKING:
    from ideal.avatar.prepare.track import TrackConfig, TrackedClip, track_clip


def __getattr__(name: str):
    if name in __all__:
        from ideal.avatar.prepare import track

        return getattr(track, name)
    raise AttributeError(name)
