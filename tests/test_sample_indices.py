"""Every domain numbers its rows (``row_index``) and every view carries the batch's sample ids as
"indices" Long[B] (multissl.views): what memory banks index by. A skipped bad sample leaves its
id out with its row."""

from __future__ import annotations

import pytest
import torch

from multissl.views import ViewRequest
from tests.objective_harness import raw_batch, tiny_setup

ROWS = [3, 0, 7, 5]


def _views(setup, request, rows=ROWS):
    batch = setup.domain.collate([setup.dataset[i] for i in rows])
    return batch, setup.domain.make_views(batch, request, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["image", "audio", "text"])
def test_rows_are_numbered_and_every_view_carries_their_ids(data_root, kind):
    setup = tiny_setup(kind, data_root, rows=8)
    assert [setup.dataset[i]["row_index"] for i in range(8)] == list(range(8))
    requests = [ViewRequest("plain"), ViewRequest.augmented(num_views=2)]
    if kind == "image":
        requests += [ViewRequest("masked"), ViewRequest("pretext", {"task": "jigsaw"}),
                     ViewRequest("corrupted", {"task": "denoising"})]
    for request in requests:
        batch, views = _views(setup, request)
        assert batch["indices"].dtype == torch.long and batch["indices"].tolist() == ROWS, request
        assert views["indices"].tolist() == ROWS, request


def test_a_skipped_image_leaves_its_id_out(data_root):
    setup = tiny_setup("image", data_root, rows=4)
    setup.domain.on_bad_sample = "skip"
    rows = [setup.dataset[0], {"image": {"bytes": b"not an image", "path": None}, "row_index": 99},
            setup.dataset[2]]
    batch = setup.domain.collate(rows)
    assert batch["skipped"] == 1 and batch["images"].shape[0] == 2
    assert batch["indices"].tolist() == [0, 2]


def test_rows_without_ids_give_no_indices(data_root):
    setup = tiny_setup("image", data_root, rows=4)
    rows = [{key: value for key, value in setup.dataset[i].items() if key != "row_index"} for i in range(2)]
    batch = setup.domain.collate(rows)
    assert "indices" not in batch
    assert "indices" not in setup.domain.make_views(batch, ViewRequest("plain"), torch.Generator())
    assert raw_batch(setup, 2)["indices"].tolist() == [0, 1]
