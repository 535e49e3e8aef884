"""Frame deadlines and quality tiers.

Every frame i of a session has fixed times on the session's clock (t0 = when the session opened):

    cutoff(i)   = t0 + (i + 1) / fps + lookahead + jitter        audio for frame i must be in by then,
                                                                 missing audio is filled with silence
    deadline(i) = cutoff(i) + render_budget                      the frame is emitted then, whatever is ready

so frames leave evenly spaced, and a frame's latency is the fixed delay `deadline(i) - t0 - i / fps` minus
how late its first audio sample arrived.

`TierPolicy` picks the base tier of each frame: it starts coarse, steps down at once when a frame was late or
the base tier's typical cost no longer fits the budget, and steps up only after `step_up_after` frames in a
row where the next tier would have fitted (progressive refinement also measures it). `plan_refinement`
says whether a finer tier of the same frame can still be rendered before the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from ideal.avatar.backend import Tier


def tier_cost(t: Tier) -> float:
    """Relative cost used to order tiers: field evaluations, then output size."""
    return float(t.rays * t.rays * t.samples) + 1e-3 * t.output * t.output


def order_tiers(tiers: dict[str, Tier]) -> list[str]:
    """Tier names from coarsest to finest."""
    return sorted(tiers, key=lambda n: tier_cost(tiers[n]))


@dataclass(frozen=True)
class FrameTiming:
    fps: float
    lookahead_s: float
    jitter_s: float
    budget_s: float

    @property
    def delay_s(self) -> float:
        """Playout delay: from the start of frame i's audio on the nominal timeline to its emission."""
        return 1.0 / self.fps + self.lookahead_s + self.jitter_s + self.budget_s

    def cutoff(self, t0: float, i: int) -> float:
        return t0 + (i + 1) / self.fps + self.lookahead_s + self.jitter_s

    def deadline(self, t0: float, i: int) -> float:
        return self.cutoff(t0, i) + self.budget_s


class CostModel:
    """Typical render cost per tier (one backend call), pessimistic on purpose: it follows a slowdown almost
    at once (`alpha_up`) and a speed-up slowly (`alpha_down`), so one lucky fast call never tempts the
    scheduler into a tier that then misses its deadlines."""

    def __init__(self, alpha_up: float = 0.7, alpha_down: float = 0.1) -> None:
        self.alpha_up, self.alpha_down = alpha_up, alpha_down
        self._cost: dict[str, float] = {}

    def observe(self, tier: str, seconds: float) -> None:
        old = self._cost.get(tier)
        if old is None:
            self._cost[tier] = seconds
        else:
            a = self.alpha_up if seconds > old else self.alpha_down
            self._cost[tier] = old + a * (seconds - old)

    def estimate(self, tier: str) -> float | None:
        return self._cost.get(tier)


class TierPolicy:
    """Adaptive base tier of one session, between the coarsest tier and `cap`."""

    def __init__(self, ordered: list[str], budget_s: float, frame_s: float, cap: str | None = None,
                 step_up_after: int = 50, step_down_cost: float = 0.9, adaptive: bool = True) -> None:
        if cap is not None and cap not in ordered:
            raise ValueError(cap)
        self.ordered = ordered[: ordered.index(cap) + 1] if cap else list(ordered)
        self.adaptive = adaptive
        # not adaptive: always the cap (benchmarks measuring one tier); late frames are still counted
        self.level = 0 if adaptive else len(self.ordered) - 1
        self.budget_s = budget_s
        self.frame_s = frame_s
        self.step_up_after = step_up_after
        self.step_down_cost = step_down_cost
        self._good = 0
        self.steps_down = 0
        self.steps_up = 0

    @property
    def base(self) -> str:
        return self.ordered[self.level]

    @property
    def finer(self) -> str | None:
        return self.ordered[self.level + 1] if self.level + 1 < len(self.ordered) else None

    def fits(self, cost: float | None) -> bool:
        # a base render must fit the budget and must not hold up the next frame's render
        return cost is not None and cost <= self.step_down_cost * min(self.budget_s, self.frame_s)

    def after_frame(self, late: bool, costs: CostModel) -> None:
        """Adapt after each emitted frame."""
        if not self.adaptive:
            return
        if self.level > 0 and (late or not self.fits(costs.estimate(self.base)) and
                               costs.estimate(self.base) is not None):
            self.level -= 1
            self.steps_down += 1
            self._good = 0
            return
        if late:
            self._good = 0
            return
        finer = self.finer
        if finer is None:
            return
        est = costs.estimate(finer)
        if est is not None and est <= 0.7 * min(self.budget_s, self.frame_s):
            self._good += 1
            if self._good >= self.step_up_after:
                self.level += 1
                self.steps_up += 1
                self._good = 0
        else:
            self._good = 0

    def plan_refinement(self, time_left_s: float, costs: CostModel, queue_busy: bool) -> str | None:
        """A finer tier to render after the base one for this frame, or None."""
        finer = self.finer
        if finer is None or queue_busy or not self.adaptive:
            return None
        est = costs.estimate(finer)
        if est is None:  # the engine measures every tier at start; never gamble a deadline on an unknown
            return None
        return finer if est <= 0.8 * time_left_s and est <= self.frame_s else None
