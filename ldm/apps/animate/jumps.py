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

A switch can also go away and come back: the model flashes another picture over a short stretch
of the path (a black background for one frame between two gray ones, in the quickstart's run E).
When that stretch falls between two probes, the probe step's ends look alike, its length is short
and the search above never looks inside it; re-spacing then sends a frame of the walk there, and
the walk flashes. More probes would not settle it: rendering every probe step's midpoint doubles
the probe pass and still misses a stretch narrower than half a step. But a frame that shows such a
stretch can be told from its neighbours: it is far (above the bar) from both of them while they
are close (within it) to each other, and smooth motion cannot go away and come back within two
steps. That is a flash. A flash that no frame lands on is not in the walk either, so the frames
searched for flashes are the walk's own, once its last pass is rendered (`find_flashes`), and the
probes (`find_jumps`). Keyframes are never flashes: they are the keyframe images, whatever their
neighbours show.

Both steps of a flash are bisected like long probe steps, which finds the switch away and the
switch back; the two are dissolved as one jump, from the first one's start to the second one's
end. Its ends look alike, so its dissolve stays on the path's picture and the flashed picture is
never shown: a picture that one frame shows is a glitch of the model, not a stretch of the walk (a
picture that several frames show is a stretch, and its switches are ordinary jumps). In the walk's
frames, a flash costs the renders of its two searches (at most 2 x `BISECTIONS`) and its frame
rendered again; a walk without one costs none. Among the probes it costs nothing more: both its
steps are long, and searched anyway.

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
    """An interval of the walk's timeline whose frames are dissolves: a switch between two
    pictures that no frame inside it can make smaller, or a flash skipped (`distance` is then
    small: its ends look alike)."""

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
    """An interval being bisected: its current ends, the frames there, their distance."""

    start: float
    end: float
    start_frame: np.ndarray
    end_frame: np.ndarray
    distance: float

    def within(self, start: float, end: float) -> bool:
        return start <= self.start and self.end <= end

    def as_jump(self) -> Jump:
        return Jump(self.start, self.end, self.distance)


@dataclass
class _Flash:
    """A frame far from both its neighbours while they are close: the steps into and out of it."""

    into: _Search
    out_of: _Search


class _Walk:
    """Frames in timeline order, their consecutive distances and the bar a step must pass to be
    searched: `EXAMINE_RATIO` times the median step (floored by the mean's share)."""

    def __init__(self, positions: Sequence[float], frames: Sequence[np.ndarray], distance: Distance):
        self.positions, self.frames, self.distance = positions, frames, distance
        self.gaps = np.array([distance(a, b) for a, b in zip(frames[:-1], frames[1:])])
        self.bar = EXAMINE_RATIO * max(float(np.median(self.gaps)), MEAN_FLOOR * float(self.gaps.mean()))

    def step(self, k: int) -> _Search:
        """Step k (frame k to frame k + 1), to be bisected."""
        return _Search(self.positions[k], self.positions[k + 1], self.frames[k], self.frames[k + 1],
                       float(self.gaps[k]))

    def long_steps(self) -> list[_Search]:
        return [self.step(k) for k in range(len(self.gaps)) if self.gaps[k] > self.bar]

    def flashes(self) -> list[_Flash]:
        """Frames, keyframes aside, that no neighbour shows (module docstring)."""
        above = self.gaps > self.bar
        return [_Flash(self.step(k - 1), self.step(k)) for k in range(1, len(self.gaps))
                if above[k - 1] and above[k] and not float(self.positions[k]).is_integer()  # a keyframe
                and self.distance(self.frames[k - 1], self.frames[k + 1]) <= self.bar]


def find_jumps(positions: Sequence[float], frames: Sequence[np.ndarray], render: Render,
               distance: Distance) -> tuple[list[Jump], dict[float, np.ndarray]]:
    """The jumps between consecutive probe frames (`positions` sorted, a loop's closing position
    included with the first frame again), a flash's two switches as one, and every frame rendered
    while searching (position -> frame). `render` renders a batch of positions; each halving
    renders one batch, of at most as many frames as there are probe steps (the longest intervals
    are kept), so the whole search costs at most `BISECTIONS` renders of the probe pass."""
    walk = _Walk(positions, frames, distance)
    found, rendered = _bisect(walk.long_steps(), render, distance, walk.bar, budget=len(walk.gaps))
    across = _across_flashes(found, walk.flashes(), distance)
    jumps = sorted(_outside(found, across) + across, key=lambda search: search.start)
    return [search.as_jump() for search in jumps], rendered


def find_flashes(positions: Sequence[float], frames: Sequence[np.ndarray], render: Render,
                 distance: Distance) -> tuple[list[Jump], dict[float, np.ndarray]]:
    """Jumps across the flashes among `frames` (a walk's, as `find_jumps` takes them), each one
    dissolving a switch away and its switch back, and every frame rendered while searching. Only
    a flash's two steps are searched: at most 2 x `BISECTIONS` renders a flash, none without."""
    walk = _Walk(positions, frames, distance)
    flashes = walk.flashes()
    steps = [step for flash in flashes for step in (flash.into, flash.out_of)]
    found, rendered = _bisect(steps, render, distance, walk.bar, budget=len(walk.gaps))
    return [search.as_jump() for search in _across_flashes(found, flashes, distance)], rendered


def _bisect(searches: list[_Search], render: Render, distance: Distance, bar: float,
            budget: int) -> tuple[list[_Search], dict[float, np.ndarray]]:
    """`searches` halved `BISECTIONS` times, each time keeping the halves still above `bar` (at
    most `budget`, the longest), in timeline order; and every frame rendered (position -> frame)."""
    rendered: dict[float, np.ndarray] = {}
    for _ in range(BISECTIONS):
        if not searches:
            break
        middles = [(search.start + search.end) / 2 for search in searches]
        rendered.update(zip(middles, render(middles)))
        halves = [half for search, middle in zip(searches, middles)
                  for half in _halves(search, middle, rendered[middle], distance) if half.distance > bar]
        longest = sorted(halves, key=lambda half: -half.distance)[:budget]
        searches = sorted(longest, key=lambda half: half.start)
    return searches, rendered


def _halves(search: _Search, middle: float, frame: np.ndarray, distance: Distance) -> tuple[_Search, _Search]:
    """`search` split at `middle`, each half with the distance between its end frames."""
    return (_Search(search.start, middle, search.start_frame, frame, distance(search.start_frame, frame)),
            _Search(middle, search.end, frame, search.end_frame, distance(frame, search.end_frame)))


def _across_flashes(found: Sequence[_Search], flashes: Sequence[_Flash], distance: Distance) -> list[_Search]:
    """For each flash whose steps in and out both hold a switch in `found`: one interval from the
    first switch's start to the last one's end. A flash without both (the frame went there and
    back smoothly, fast) is left alone, and so is one whose switch in the flash before took (a
    flicker, every other frame a flash: the first is skipped, the switch after it stays a jump)."""
    across: list[_Search] = []
    for flash in flashes:
        free = _outside(found, across)
        into = [search for search in free if search.within(flash.into.start, flash.into.end)]
        out_of = [search for search in free if search.within(flash.out_of.start, flash.out_of.end)]
        if into and out_of:
            first, last = into[0], out_of[-1]
            across.append(_Search(first.start, last.end, first.start_frame, last.end_frame,
                                  distance(first.start_frame, last.end_frame)))
    return across


def _outside(searches: Sequence[_Search], intervals: Sequence[_Search]) -> list[_Search]:
    """The searches that lie within none of `intervals`."""
    return [search for search in searches if not any(search.within(i.start, i.end) for i in intervals)]


def dissolve_positions(jumps: Sequence[Jump]) -> list[float]:
    """Positions inside each jump, evenly spread, where a dissolve is decoded to measure its path."""
    return [jump.start + (jump.end - jump.start) * (i + 1) / (DISSOLVE_PROBES + 1)
            for jump in jumps for i in range(DISSOLVE_PROBES)]
