"""The contrastive losses under two real gloo processes equal one process on the concatenated batch.

One spawn runs every loss for an equal and an unequal split of the batch. Each rank returns its
loss value and its input gradients divided by the world size (what DDP's averaging makes of them);
the reference is the same code run here, in one process, with a single rank holding every row.
"""

from __future__ import annotations

import pytest
import torch

from multissl import distributed
from multissl.losses import (clip_loss, cpc, cpc_accuracy, info_nce, masked_cluster_prediction, nt_xent, siglip_loss,
                             soft_nearest_neighbors, spectral_contrastive, supcon)
from tests.dist import run_in_processes

SPLITS = [[4, 4], [5, 2]]  # rows per rank; the second leaves the ranks unequal
DIM, STEPS, OFFSETS = 6, 5, 2


def _global_batch(rows: int) -> dict[str, torch.Tensor]:
    """Every input of every loss for a global batch of ``rows`` rows; the same on every process."""
    g = torch.Generator().manual_seed(rows)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    mask = torch.ones(rows, STEPS, dtype=torch.bool)
    mask[1, 3:] = False
    mask[-1, 4:] = False
    predictions, targets = randn(rows, STEPS, OFFSETS, DIM), randn(rows, STEPS, DIM)
    predictions[:, :-1, 0] += 2 * targets[:, 1:]  # one step ahead is predictable: accuracies not all 0
    predictions[~mask] = float("nan")  # padding holds garbage; it must change nothing
    targets[~mask] = float("nan")
    labels = torch.arange(rows) % 3
    labels[0] = 7  # a class with one member: its row has no partner in soft nearest neighbours
    units = torch.randint(0, 5, (rows, STEPS), generator=g)
    return dict(
        x=randn(rows, DIM), y=randn(rows, DIM), queue=randn(11, DIM), views=randn(rows, 2, DIM),
        labels=labels, predictions=predictions, targets=targets, mask=mask, synthetic=randn(rows, 3, DIM),
        frames=randn(rows, STEPS, DIM), units=units, codewords=randn(5, DIM),
    )


# name -> (loss of the inputs, names of the per-row inputs it differentiates)
LOSSES = {
    "info_nce": (lambda t: info_nce(t["x"], t["y"], None, 0.2), ["x", "y"]),
    "info_nce_queue": (lambda t: info_nce(t["x"], t["y"], t["queue"], 0.2), ["x", "y"]),
    "nt_xent": (lambda t: nt_xent(t["x"], t["y"], 0.5), ["x", "y"]),
    "clip_loss": (lambda t: clip_loss(t["x"], t["y"], t["logit_scale"]), ["x", "y"]),
    "supcon": (lambda t: supcon(t["views"], t["labels"], 0.3), ["views"]),
    "soft_nearest_neighbors": (lambda t: soft_nearest_neighbors(t["x"], t["labels"], 3.0), ["x"]),
    "cpc": (lambda t: cpc(t["predictions"], t["targets"], t["mask"], 0.5), ["predictions", "targets"]),
    "info_nce_hard": (lambda t: info_nce(t["x"], t["y"], t["queue"], 0.2, query_negatives=t["synthetic"],
                                         tau_plus=0.1, beta=1.0), ["x", "y", "synthetic"]),
    "nt_xent_debiased": (lambda t: nt_xent(t["x"], t["y"], 0.5, tau_plus=0.1), ["x", "y"]),
    "siglip_loss": (lambda t: siglip_loss(t["x"], t["y"], t["logit_scale"], t["logit_bias"], block_size=3), ["x", "y"]),
    "spectral_contrastive": (lambda t: spectral_contrastive(t["x"], t["y"], 2.0), ["x", "y"]),
    "masked_cluster_prediction": (lambda t: masked_cluster_prediction(t["frames"], t["codewords"], t["units"],
                                                                      t["mask"], 0.1), ["frames"]),
}
#: 0-d parameters shared by every rank (DDP averages their gradients), per loss
SHARED = {"clip_loss": ["logit_scale"], "siglip_loss": ["logit_scale", "logit_bias"]}


def _run_all_losses(splits: list[list[int]]) -> dict[str, torch.Tensor]:
    """This rank's slice of each split, every loss: value, row gradients / world size, scale gradient."""
    rank, world = distributed.rank(), distributed.world_size()
    out = {}
    for sizes in splits:
        assert len(sizes) == world
        start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        batch = _global_batch(sum(sizes))
        for name, (loss_fn, differentiated) in LOSSES.items():
            local = {k: v if k in ("queue", "codewords") else v[start:stop] for k, v in batch.items()}
            for k in differentiated:
                local[k] = local[k].clone().requires_grad_(True)
            local["codewords"] = local["codewords"].clone().requires_grad_(True)
            local["logit_scale"] = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
            local["logit_bias"] = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
            loss = loss_fn(local)
            loss.backward()
            key = f"{sum(sizes)}/{name}"
            out[f"{key}/value"] = loss.detach()
            for k in differentiated:
                out[f"{key}/grad_{k}"] = local[k].grad / world
            for k in SHARED.get(name, []) + (["codewords"] if name == "masked_cluster_prediction" else []):
                out[f"{key}/grad_{k}"] = local[k].grad / world
        frames = {k: batch[k][start:stop] for k in ("predictions", "targets", "mask")}
        out[f"{sum(sizes)}/cpc_accuracy"] = cpc_accuracy(frames["predictions"], frames["targets"], frames["mask"])
    return out


@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_concatenated_batch():
    per_rank = run_in_processes(_run_all_losses, SPLITS, world_size=2)
    for sizes in SPLITS:
        reference = _run_all_losses([[sum(sizes)]])
        for name, (_, differentiated) in LOSSES.items():
            key = f"{sum(sizes)}/{name}"
            for rank, result in enumerate(per_rank):
                start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
                torch.testing.assert_close(
                    result[f"{key}/value"], reference[f"{key}/value"], rtol=1e-5, atol=1e-5, msg=f"{key} value"
                )
                for k in differentiated:
                    torch.testing.assert_close(
                        result[f"{key}/grad_{k}"], reference[f"{key}/grad_{k}"][start:stop],
                        rtol=1e-5, atol=1e-5, msg=f"{key} gradient of {k} on rank {rank}",
                    )
            # shared parameters: DDP's average of the ranks' gradients
            for k in SHARED.get(name, []) + (["codewords"] if name == "masked_cluster_prediction" else []):
                averaged = sum(result[f"{key}/grad_{k}"] for result in per_rank)
                torch.testing.assert_close(averaged, reference[f"{key}/grad_{k}"], rtol=1e-5, atol=1e-5,
                                           msg=f"{key} gradient of {k}")
        for result in per_rank:  # the logged CPC accuracy is the global one on every rank
            key = f"{sum(sizes)}/cpc_accuracy"
            torch.testing.assert_close(result[key], reference[key], rtol=0, atol=1e-7)
    # the padded garbage never leaked into a value
    assert all(torch.isfinite(v).all() for result in per_rank for v in result.values())
