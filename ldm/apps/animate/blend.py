"""Latent blending (lunarring/latentblending): frames between two keyframes share their early
denoising steps with their neighbours and branch late, so the layout cannot flip between neighbours.

A frame sampled on its own from slerped noise (`SlerpPath`) decides its whole picture afresh; two
frames close on the path may still settle on two different layouts (a jump). Here each segment
between keyframes i and j grows a tree of trajectories, fixed by the walk alone:

- the keyframes' own trajectories (full, as `ldm generate` samples them), level 0 of the tree;
- level d = 1 .. LEVELS: the nodes at u = k / 2**d (k odd), each started at step `branch[d - 1]`
  from the slerp, half and half, of its two neighbours one level up (their latents after that
  many steps), and denoised with its own text embedding and guidance up to the frames' branch step;
- a frame at any u between grid nodes g and g + 1 of the deepest level starts at the frames'
  branch step (`branch[-1]`) from the slerp of the two nodes' latents there, weighted by where it
  falls between them, and is denoised with its own embedding to the end.

Deeper levels branch later, so each new trajectory has fewer steps left to change its mind: the
layout is settled at the top of the tree and refined down it, and a frame shares all but its last
few steps with its two neighbours (latentblending's tree, with its branch points from
`depth_strength` onwards). Latentblending inserts each new branch where the two closest images
differ most (LPIPS); here the tree is the same dyadic grid for every walk, so that a frame depends
on its position only: a resumed render, or another process, makes the same bytes (each segment's
tree is sampled in fixed batches, level by level, and each keyframe alone). Even motion then
spaces the frames by measured distance, as it does for every method.

A frame costs only the steps after the frames' branch point (1 - LAST_BRANCH of them); each segment
costs once about 2**LEVELS - 1 partial trajectories more. Latentblending is a program around
diffusers pipelines, not a library part, so the tree is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ldm.apps.animate import spacing

if TYPE_CHECKING:
    from ldm.apps.animate.renderers import DiffusionWalk

LEVELS = 3  # tree levels between two keyframes: a grid of 2**LEVELS cells
DEPTH_STRENGTH = 0.5  # share of the steps before the first branch (latentblending's default depth_strength)
LAST_BRANCH = 0.8  # share of the steps a frame shares with its two grid neighbours

Trajectory = dict[int, torch.Tensor]  # steps done -> the latents then (C, h, w)


def branch_steps(steps: int) -> list[int]:
    """The step where level d's nodes branch ([d - 1]), and the frames' branch step ([-1]):
    from DEPTH_STRENGTH to LAST_BRANCH of the steps, each below `steps` (a frame denoises at least
    one step of its own). With one step, every branch is at 0: frames start from mixed noise."""
    shares = [DEPTH_STRENGTH + (LAST_BRANCH - DEPTH_STRENGTH) * d / LEVELS for d in range(LEVELS + 1)]
    return [min(max(round(steps * share), 1), steps - 1) for share in shares]


def mix(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Two trajectories' latents, slerped as latentblending's `interpolate_spherical` does; a
    weight of 0 is `a` itself, exactly."""
    return a if weight == 0 else spacing.slerp(a, b, weight)


@dataclass
class BlendTree:
    """Method "blend" of `DiffusionWalk`: frames branched late from a tree of trajectories."""

    _keyframes: dict[int, Trajectory] = field(default_factory=dict)
    _grids: dict[int, dict[int, Trajectory]] = field(default_factory=dict)  # segment -> grid index -> nodes

    def sample(self, walk: DiffusionWalk, times: list[float]) -> torch.Tensor:
        start = branch_steps(walk.steps)[-1]
        latents: list[torch.Tensor | None] = [None] * len(times)
        between = []
        for n, t in enumerate(times):
            i, j, u = spacing.locate(t, walk.num_keyframes, walk.loop)
            if u in (0, 1):  # a keyframe: its own full trajectory, `ldm generate`'s image
                latents[n] = self.keyframe(walk, i if u == 0 else j)[walk.steps]
            else:
                between.append(n)
        if between:
            positions = [times[n] for n in between]
            starts = torch.stack([self.start(walk, t, start) for t in positions])
            embeddings, _, scales = walk.at(positions)
            sampled = walk.by_scale(scales, lambda rows, scale: walk.denoise(
                embeddings[rows], starts[rows], scale, start_step=start))
            for n, latent in zip(between, sampled):
                latents[n] = latent
        return torch.stack(latents)

    def start(self, walk: DiffusionWalk, t: float, step: int) -> torch.Tensor:
        """A frame's latents at the frames' branch step: its two grid neighbours', mixed."""
        i, _, u = spacing.locate(t, walk.num_keyframes, walk.loop)
        grid = self.grid(walk, i)
        cell = min(math.floor(u * 2 ** LEVELS), 2 ** LEVELS - 1)
        return mix(grid[cell][step], grid[cell + 1][step], u * 2 ** LEVELS - cell)

    def keyframe(self, walk: DiffusionWalk, k: int) -> Trajectory:
        """Keyframe k's trajectory, sampled alone (as `ldm generate` samples one image)."""
        if k not in self._keyframes:
            trajectory = {0: walk.noises[k]}
            wanted = set(branch_steps(walk.steps))
            final = walk.denoise(walk.embeddings[k: k + 1], walk.noises[k: k + 1], walk.guidances[k],
                                 callback_on_step_end=_recorder(walk, 0, wanted, [trajectory]))
            trajectory[walk.steps] = final[0]
            self._keyframes[k] = trajectory
        return self._keyframes[k]

    def grid(self, walk: DiffusionWalk, segment: int) -> dict[int, Trajectory]:
        """The tree of `segment`: its nodes by grid index 0 .. 2**LEVELS, grown level by level."""
        if segment in self._grids:
            return self._grids[segment]
        size = 2 ** LEVELS
        nodes = {0: self.keyframe(walk, segment), size: self.keyframe(walk, (segment + 1) % walk.num_keyframes)}
        branch = branch_steps(walk.steps)
        for level in range(1, LEVELS + 1):
            stride = size >> level
            ks = list(range(stride, size, 2 * stride))
            begin, end = branch[level - 1], branch[-1]
            starts = torch.stack([mix(nodes[k - stride][begin], nodes[k + stride][begin], 0.5) for k in ks])
            trajectories = [{begin: latent} for latent in starts]
            if end > begin:
                wanted = set(branch[level:])  # where its children and the frames branch
                _denoise_nodes(walk, [segment + k / size for k in ks], starts, begin, end, wanted, trajectories)
            nodes.update(zip(ks, trajectories))
        self._grids[segment] = nodes
        return nodes


def _denoise_nodes(walk: DiffusionWalk, times: list[float], starts: torch.Tensor, begin: int, end: int,
                   wanted: set[int], trajectories: list[Trajectory]) -> None:
    """Denoise the nodes at `times` from their `starts` (step `begin`) to step `end`, keeping their
    latents at the `wanted` steps in `trajectories`."""
    embeddings, _, scales = walk.at(times)

    def denoise(rows: list[int], scale: float):
        return walk.denoise(embeddings[rows], starts[rows], scale, start_step=begin, end_step=end,
                            callback_on_step_end=_recorder(walk, begin, wanted, [trajectories[r] for r in rows]))

    walk.by_scale(scales, denoise)


def _recorder(walk: DiffusionWalk, start: int, wanted: set[int], trajectories: list[Trajectory]):
    """A pipeline callback that keeps each row's latents after the steps in `wanted` (the call
    starting at step `start`); it changes nothing."""
    order = walk.pipe.scheduler.order

    def callback(pipe, i: int, timestep, tensors: dict) -> dict:
        if (i + 1) % order == 0 and start + (i + 1) // order in wanted:
            for trajectory, latent in zip(trajectories, tensors["latents"]):
                trajectory[start + (i + 1) // order] = latent.clone()
        return {}

    return callback
