"""The expression vector: one fixed layout with named slices, shared by every identity.

Input is MediaPipe Face Mesh landmarks (478 points, irises included) already moved into the person's
canonical head space by the inverse of the rigid head pose (fitted on `RIGID_POINTS` only, so jaw motion is
never absorbed into the pose), in units of the person's neutral face height (forehead 10 to chin 152).
Axes follow the image: x to the right, y down, z away from the camera.

Every entry except `mouth_open` is a delta from the person's own neutral face (identity-normalised), so a
value means the same motion on any face and another person's clip can drive this avatar. Values are scaled
by `FEATURE_SCALE` so that typical motion is O(1) for the networks.

`mouth_open` (inner-lip gap over face height, times FEATURE_SCALE) is the scalar every lip-sync figure uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 478
FEATURE_SCALE = 10.0

# --- MediaPipe Face Mesh indices (subject's right = image left) -------------------------------------------
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
UPPER_LIP_OUTER, LOWER_LIP_OUTER = 0, 17
MOUTH_CORNER_R, MOUTH_CORNER_L = 61, 291
R_EYE_OUTER, R_EYE_INNER, R_EYE_UPPER, R_EYE_LOWER = 33, 133, 159, 145
L_EYE_OUTER, L_EYE_INNER, L_EYE_UPPER, L_EYE_LOWER = 263, 362, 386, 374
R_IRIS, L_IRIS = 468, 473
R_BROW_MID, R_BROW_INNER = 105, 107
L_BROW_MID, L_BROW_INNER = 334, 336

# Points that move with the skull and not with the jaw, lids or brows: the pose is fitted on these only.
RIGID_POINTS: tuple[int, ...] = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2,  # forehead midline, nose bridge and tip
    33, 263, 133, 362,  # eye corners
    234, 454, 127, 356, 93, 323,  # face sides at ear height
    98, 327, 129, 358,  # nose wings
    109, 338, 67, 297, 103, 332,  # upper forehead
)

# Landmark groups used by the evaluation (LMD on the whole face and on the mouth).
LIPS: tuple[int, ...] = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)
FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
    176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)


@dataclass(frozen=True)
class ExpressionSlice:
    name: str
    start: int
    stop: int
    fields: tuple[str, ...]

    @property
    def indices(self) -> slice:
        return slice(self.start, self.stop)


def _layout(groups: list[tuple[str, tuple[str, ...]]]) -> dict[str, ExpressionSlice]:
    out, start = {}, 0
    for name, fields in groups:
        out[name] = ExpressionSlice(name, start, start + len(fields), fields)
        start += len(fields)
    return out


SLICES: dict[str, ExpressionSlice] = _layout([
    ("mouth", ("mouth_open", "outer_open", "width", "upper_lip_raise", "lower_lip_drop", "jaw_drop",
               "corner_lift", "lip_protrusion", "corner_tilt", "jaw_lateral")),
    ("brows", ("brow_raise_r", "brow_raise_l", "brow_inner_raise", "brow_furrow")),
    ("eyes", ("eye_open_r", "eye_open_l")),
    ("gaze", ("gaze_x_r", "gaze_y_r", "gaze_x_l", "gaze_y_l")),
])
EXPRESSION_DIM: int = max(s.stop for s in SLICES.values())
FIELDS: tuple[str, ...] = tuple(f for s in SLICES.values() for f in s.fields)
MOUTH_OPEN_INDEX: int = FIELDS.index("mouth_open")


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def _raw_measures(lm: np.ndarray) -> np.ndarray:
    """Absolute geometric measures of canonical landmarks (..., 478, 3) -> (..., EXPRESSION_DIM)."""
    p = lambda i: lm[..., i, :]  # noqa: E731
    x, y, z = (lambda i: lm[..., i, 0]), (lambda i: lm[..., i, 1]), (lambda i: lm[..., i, 2])
    lip_mid_y = 0.5 * (y(UPPER_LIP_INNER) + y(LOWER_LIP_INNER))
    r_eye_w = _dist(p(R_EYE_OUTER), p(R_EYE_INNER))
    l_eye_w = _dist(p(L_EYE_OUTER), p(L_EYE_INNER))
    r_eye_c = 0.5 * (p(R_EYE_OUTER) + p(R_EYE_INNER))
    l_eye_c = 0.5 * (p(L_EYE_OUTER) + p(L_EYE_INNER))
    r_eye_y = 0.5 * (y(R_EYE_UPPER) + y(R_EYE_LOWER))
    l_eye_y = 0.5 * (y(L_EYE_UPPER) + y(L_EYE_LOWER))
    lips_z = np.mean(np.stack([z(UPPER_LIP_OUTER), z(LOWER_LIP_OUTER), z(UPPER_LIP_INNER),
                               z(LOWER_LIP_INNER)]), axis=0)
    measures = [
        # mouth
        _dist(p(UPPER_LIP_INNER), p(LOWER_LIP_INNER)),
        _dist(p(UPPER_LIP_OUTER), p(LOWER_LIP_OUTER)),
        _dist(p(MOUTH_CORNER_R), p(MOUTH_CORNER_L)),
        y(NOSE_TIP) - y(UPPER_LIP_OUTER),  # grows when the upper lip rises towards the nose
        y(LOWER_LIP_OUTER) - y(NOSE_TIP),
        y(CHIN) - y(NOSE_TIP),
        lip_mid_y - 0.5 * (y(MOUTH_CORNER_R) + y(MOUTH_CORNER_L)),  # corners above lip centre: smile
        z(NOSE_TIP) - lips_z,  # lips towards the camera: pucker
        y(MOUTH_CORNER_R) - y(MOUTH_CORNER_L),
        x(CHIN) - x(NOSE_TIP),
        # brows: brow above eye centre
        r_eye_y - y(R_BROW_MID),
        l_eye_y - y(L_BROW_MID),
        0.5 * ((r_eye_y - y(R_BROW_INNER)) + (l_eye_y - y(L_BROW_INNER))),
        _dist(p(R_BROW_INNER), p(L_BROW_INNER)),
        # eyes: lid gap over eye width
        _dist(p(R_EYE_UPPER), p(R_EYE_LOWER)) / np.maximum(r_eye_w, 1e-6),
        _dist(p(L_EYE_UPPER), p(L_EYE_LOWER)) / np.maximum(l_eye_w, 1e-6),
        # gaze: iris centre relative to the eye-corner midpoint, over eye width
        (x(R_IRIS) - r_eye_c[..., 0]) / np.maximum(r_eye_w, 1e-6),
        (y(R_IRIS) - r_eye_c[..., 1]) / np.maximum(r_eye_w, 1e-6),
        (x(L_IRIS) - l_eye_c[..., 0]) / np.maximum(l_eye_w, 1e-6),
        (y(L_IRIS) - l_eye_c[..., 1]) / np.maximum(l_eye_w, 1e-6),
    ]
    return np.stack(measures, axis=-1).astype(np.float32)


def face_height(lm: np.ndarray) -> np.ndarray:
    """Forehead-to-chin distance of landmarks (..., 478, 3)."""
    return _dist(lm[..., FOREHEAD, :], lm[..., CHIN, :])


def expression_from_landmarks(canonical: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Expression vectors from canonical landmarks.

    canonical: (N, 478, 3) pose-normalised landmarks of a person, in units of that person's neutral face height.
    neutral:   (478, 3) the same person's neutral face (mouth closed, eyes open) in the same space.
    returns:   (N, EXPRESSION_DIM) float32.
    """
    if canonical.shape[-2:] != (N_LANDMARKS, 3) or neutral.shape != (N_LANDMARKS, 3):
        raise ValueError(f"expected (N, {N_LANDMARKS}, 3) and ({N_LANDMARKS}, 3) landmarks, "
                         f"got {canonical.shape} and {neutral.shape}")
    raw = _raw_measures(canonical)
    base = _raw_measures(neutral)
    expr = raw - base
    expr[..., MOUTH_OPEN_INDEX] = raw[..., MOUTH_OPEN_INDEX]  # absolute: a closed mouth is 0 on every face
    return (expr * FEATURE_SCALE).astype(np.float32)


def mouth_opening(expression: np.ndarray) -> np.ndarray:
    """The lip-sync scalar: inner-lip gap over face height (times FEATURE_SCALE), from expression vectors."""
    return np.asarray(expression)[..., MOUTH_OPEN_INDEX]


def neutral_expression() -> np.ndarray:
    """The expression vector of a neutral face (mouth closed, eyes open, looking ahead)."""
    return np.zeros(EXPRESSION_DIM, dtype=np.float32)


def select(expression: np.ndarray, *names: str) -> np.ndarray:
    """Concatenate named slices, e.g. select(e, "brows", "eyes")."""
    return np.concatenate([expression[..., SLICES[n].indices] for n in names], axis=-1)


def replace(expression: np.ndarray, source: np.ndarray, *names: str) -> np.ndarray:
    """A copy of `expression` whose named slices are taken from `source` (same leading shape)."""
    out = np.array(expression, dtype=np.float32, copy=True)
    for n in names:
        out[..., SLICES[n].indices] = source[..., SLICES[n].indices]
    return out
