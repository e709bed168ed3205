"""Classification pretext tasks on whole batches: rotation, jigsaw, relative patch position.

All three cut or turn the image and ask the network which transformation was applied:

- rotation (Gidaris et al. 2018): 0, 90, 180 or 270 degrees counter-clockwise (labels 0-3);
- jigsaw (Noroozi & Favaro 2016): 9 tiles of a 3x3 grid, shuffled by one permutation of a fixed
  set; the label is the permutation's index in the set;
- relative position (Doersch et al. 2015): the centre patch and one of its 8 neighbours; the
  label is the neighbour (0 top-left, 1 top, 2 top-right, 3 left, 4 right, 5 bottom-left,
  6 bottom, 7 bottom-right).

Tiles are random crops inside their grid cells (the gap between tiles, and the jitter of a tile
within its cell, keep the network from matching edges: both papers' shortcut guards).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

import torch
from torch import Tensor

from . import draws
from .geometry import crop_resize_many

__all__ = [
    "rotate_quarter_turns",
    "jigsaw_permutations",
    "hamming_distances",
    "grid_tile_boxes",
    "jigsaw_tiles",
    "relative_position_tiles",
    "NEIGHBOUR_CELLS",
]

GRID = 3
#: grid cell (row-major in the 3x3 grid) of relative-position label 0..7
NEIGHBOUR_CELLS = (0, 1, 2, 3, 5, 6, 7, 8)
CENTRE_CELL = 4


def rotate_quarter_turns(images: Tensor, turns: Tensor) -> Tensor:
    """Rotate ``images[b]`` ([B, C, S, S], square) by ``turns[b]`` x 90 degrees counter-clockwise.

    Counter-clockwise as displayed (row 0 at the top), i.e. ``torch.rot90(x, k, dims=(-2, -1))``.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    rotated = images.clone()
    for quarter_turns in (1, 2, 3):
        rows = turns == quarter_turns
        if bool(rows.any()):
            rotated[rows] = torch.rot90(images[rows], quarter_turns, dims=(-2, -1))
    return rotated


def hamming_distances(permutations: Tensor, reference: Tensor) -> Tensor:
    """Long[N]: number of positions where each row of ``permutations`` [N, L] differs from ``reference`` [L]."""
    return (permutations != reference).sum(dim=1)


@functools.lru_cache(maxsize=2)
def _all_permutations_by_position(tiles: int) -> np.ndarray:
    """uint8 [tiles, tiles!]: every permutation in lexicographic order, stored position-major."""
    flat = itertools.chain.from_iterable(itertools.permutations(range(tiles)))
    return np.fromiter(flat, dtype=np.uint8).reshape(-1, tiles).T.copy()


@functools.lru_cache(maxsize=8)
def jigsaw_permutations(count: int, tiles: int = GRID * GRID) -> Tensor:
    """A set of ``count`` permutations of ``range(tiles)``, far apart in Hamming distance: Long[count, tiles].

    Greedy, as Noroozi & Favaro 2016 (Algorithm 1), but the criterion differs: the paper adds the
    permutation with the largest *average* Hamming distance to the chosen set; here the largest
    *minimum* distance wins (farthest-point selection, which is what makes the puzzles of a set
    tell apart), ties broken by the paper's average, then by lexicographic order. It starts from
    the identity instead of a random permutation, so every process and every run gets the same set
    without sharing a file. For ``count <= tiles`` the set is a Latin rectangle: minimum distance
    ``tiles``. Minimum pairwise distance of 3x3 sets: 9 up to 9 permutations, 7 up to 64, 6 for
    100, 5 for 1000. (Host-side NumPy, cached: about 0.3 s for 100 permutations, 3 s for 1000.)
    """
    if tiles > 10 or not 1 <= count <= math.factorial(tiles):
        raise ValueError(f"need 1 <= count <= {tiles}! permutations of at most 10 tiles, got {count} of {tiles}")
    by_position = _all_permutations_by_position(tiles)  # [tiles, N]

    def distances(index: int) -> np.ndarray:
        distance = np.zeros(by_position.shape[1], dtype=np.int64)
        for position in range(tiles):
            distance += by_position[position] != by_position[position, index]
        return distance

    chosen = [0]  # lexicographic order starts with the identity
    minimum = distances(0)
    total = minimum.copy()
    # a minimum of m beats any total below tiles * count + 1: minimum first, total as tie-breaker
    weight = tiles * count + 1
    for _ in range(count - 1):
        best = int(np.argmax(minimum * weight + total))  # argmax returns the first (lexicographic) maximum
        chosen.append(best)
        distance = distances(best)
        np.minimum(minimum, distance, out=minimum)
        total += distance
    return torch.from_numpy(by_position[:, chosen].T.astype(np.int64))


def grid_tile_boxes(cells: Tensor, height: int, width: int, tile_fraction: float, jitter: float,
                    generator: torch.Generator) -> Tensor:
    """Boxes Float[B, K, 4] of one tile in each grid cell ``cells[b, k]`` (row-major index in 3x3).

    A tile is ``tile_fraction`` of its cell; its offset from the centred position is uniform in
    ``[-jitter, jitter]`` times half the free room (jitter 1: anywhere inside the cell).
    """
    batch, count = cells.shape
    cell_h, cell_w = height / GRID, width / GRID
    tile_h, tile_w = cell_h * tile_fraction, cell_w * tile_fraction
    shift = draws.uniform(generator, (batch, count, 2), cells.device, -jitter, jitter)
    left = (cells % GRID) * cell_w + (cell_w - tile_w) / 2 * (1 + shift[..., 0])
    top = torch.div(cells, GRID, rounding_mode="floor") * cell_h + (cell_h - tile_h) / 2 * (1 + shift[..., 1])
    return torch.stack((left, top, torch.full_like(left, tile_w), torch.full_like(left, tile_h)), dim=-1)


def jigsaw_tiles(images: Tensor, permutations: Tensor, tile_fraction: float, tile_size: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shuffled tiles [B, 9, C, t, t] and labels Long[B].

    ``labels[b]`` indexes ``permutations``; tile i of row b is cut from grid cell
    ``permutations[labels[b], i]``. Each tile moves anywhere inside its cell (jitter 1), as the
    paper's 64 px crops in 75 px cells.
    """
    batch, _, height, width = images.shape
    labels = draws.randint(generator, permutations.shape[0], (batch,), images.device)
    cells = permutations.to(images.device)[labels]
    boxes = grid_tile_boxes(cells, height, width, tile_fraction, 1.0, generator)
    return crop_resize_many(images, boxes, tile_size), labels


def relative_position_tiles(images: Tensor, tile_fraction: float, jitter: float, tile_size: int,
                            generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Centre and neighbour tiles [B, 2, C, t, t] and the neighbour labels Long[B] (0-7)."""
    batch, _, height, width = images.shape
    labels = draws.randint(generator, len(NEIGHBOUR_CELLS), (batch,), images.device)
    neighbours = torch.tensor(NEIGHBOUR_CELLS, device=images.device)[labels]
    cells = torch.stack((torch.full_like(neighbours, CENTRE_CELL), neighbours), dim=1)
    boxes = grid_tile_boxes(cells, height, width, tile_fraction, jitter, generator)
    return crop_resize_many(images, boxes, tile_size), labels
