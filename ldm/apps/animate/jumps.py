"""Jumps in a walk: where its frames change all at once, found by bisection, and dissolved.

A diffusion model draws one of the pictures it knows. Between two keyframes it often switches from
one to another at a point of the path: a background that flips from gray to white, a shape that
snaps from circle to square, a colour word it has no in-between for. However close two frames sit
on either side of that point, the step between them stays as large as the switch, so re-spacing
(even or audio motion) cannot spread it: the frames it sends there all show one side or the
other, and the walk still leaps once. On the quickstart's model, such switches were most of the
walk's unevenness (docs/benchmarks.md).

`find_jumps` finds them once the linear probe pass is rendered. Each probe step longer than
`EXAMINE_RATIO` times the walk's median step is bisected: its midpoint is rendered, and the search
goes on in each half that is still that long. Smooth motion, even fast, moves about half as far in
half the interval, so its halves soon fall below the bar and are left to re-spacing; a switch
moves as far in any interval that holds it, however narrow, so it survives every halving. What is
still above the bar after `BISECTIONS` halvings (an interval 1/64 of a probe step) is a jump;
several switches in one probe step are found as several jumps.

Inside a jump's interval, frames are not sampled but dissolved (`DiffusionWalk.render`): each one
decodes the blend of the final latents at the interval's two ends, weighted by where it falls in
the interval, a cross-dissolve in the autoencoder's latent space, the way an editor softens a cut.
`dissolve_positions` gives the positions of a few such blends, decoded as probes, so that re-spacing
measures the dissolve's length like any other stretch of the path and gives it as many frames as
that length asks for: the walk keeps one pace through it. Nothing in diffusers or the walk tools
we learn from finds or dissolves jumps (stable-diffusion-videos leaves them; latent blending
avoids them by mixing whole trajectories at a high cost), so it is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

EXAMINE_RATIO = 2.5  # probe steps this many times the median step are searched for a jump
# The bar's floor, as a share of the mean step: a walk whose frames mostly do not move (median 0)
# would otherwise search every flicker.
MEAN_FLOOR = 0.25
BISECTIONS = 6  # halvings after which an interval still above the bar is a jump
DISSOLVE_PROBES = 4  # blends decoded inside each jump to measure the dissolve's path

Render = Callable[[list[float]], Sequence[np.ndarray]]  # positions -> uint8 frames
Distance = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Jump:
    """An interval of the walk's timeline whose ends differ by `distance` and that no frame inside
    it can make smaller (a switch between two pictures)."""

    start: float
    end: float
    distance: float

    def holds(self, position: float) -> bool:
        return self.start < position < self.end

    def weight(self, position: float) -> float:
        """How far into the dissolve a position is: 0 at the start, 1 at the end."""
        return (position - self.start) / (self.end - self.start)

    def as_dict(self) -> dict:
        return asdict(self)


def jump_at(jumps: Sequence[Jump], position: float) -> Jump | None:
    """The jump whose interval holds `position`, if any."""
    return next((jump for jump in jumps if jump.holds(position)), None)


@dataclass
class _Search:
    """One probe step being bisected: its current interval, the frames at its ends, their distance."""

    start: float
    end: float
    start_frame: np.ndarray
    end_frame: np.ndarray
    distance: float


def find_jumps(positions: Sequence[float], frames: Sequence[np.ndarray], render: Render,
               distance: Distance) -> tuple[list[Jump], dict[float, np.ndarray]]:
    """The jumps between consecutive probe frames (`positions` sorted, a loop's closing position
    included with the first frame again), and every frame rendered while searching (position ->
    frame). `render` renders a batch of positions; each halving renders one batch, of at most as
    many frames as there are probe steps (the longest intervals are kept), so the whole search
    costs at most `BISECTIONS` renders of the probe pass."""
    gaps = np.array([distance(a, b) for a, b in zip(frames[:-1], frames[1:])])
    threshold = EXAMINE_RATIO * max(float(np.median(gaps)), MEAN_FLOOR * float(gaps.mean()))
    searches = [_Search(positions[k], positions[k + 1], frames[k], frames[k + 1], float(gaps[k]))
                for k in range(len(gaps)) if gaps[k] > threshold]
    rendered: dict[float, np.ndarray] = {}
    for _ in range(BISECTIONS):
        if not searches:
            break
        middles = [(search.start + search.end) / 2 for search in searches]
        rendered.update(zip(middles, render(middles)))
        halves = [half for search, middle in zip(searches, middles)
                  for half in _halves(search, middle, rendered[middle], distance) if half.distance > threshold]
        longest = sorted(halves, key=lambda half: -half.distance)[: len(gaps)]
        searches = sorted(longest, key=lambda half: half.start)
    return [Jump(s.start, s.end, s.distance) for s in searches], rendered


def _halves(search: _Search, middle: float, frame: np.ndarray, distance: Distance) -> tuple[_Search, _Search]:
    """`search` split at `middle`, each half with the distance between its end frames."""
    return (_Search(search.start, middle, search.start_frame, frame, distance(search.start_frame, frame)),
            _Search(middle, search.end, frame, search.end_frame, distance(frame, search.end_frame)))


def dissolve_positions(jumps: Sequence[Jump]) -> list[float]:
    """Positions inside each jump, evenly spread, where a dissolve is decoded to measure its path."""
    return [jump.start + (jump.end - jump.start) * (i + 1) / (DISSOLVE_PROBES + 1)
            for jump in jumps for i in range(DISSOLVE_PROBES)]
