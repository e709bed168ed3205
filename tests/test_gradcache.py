"""GradCache: gradients equal the plain large-batch computation, dropout included, under DDP too."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl import distributed
from multissl.losses import info_nce
from multissl.modules import convert_to_global_batchnorm
from multissl.objectives import build_objective
from multissl.features import encode_views
from multissl.modules.gradcache import GradCache, grad_cached_pooled, split_rows
from multissl.views import ViewRequest
from tests.dist import run_in_processes
from tests.objective_harness import make_views, raw_batch, slice_rows, tiny_setup


def _loss_and_grads(module, compute):
    module.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _assert_same(reference, cached, atol=1e-5):
    (loss_ref, grads_ref), (loss_cached, grads_cached) = reference, cached
    torch.testing.assert_close(loss_cached, loss_ref, atol=atol, rtol=0)
    assert set(grads_cached) == set(grads_ref) and grads_ref
    for name, grad in grads_ref.items():
        torch.testing.assert_close(grads_cached[name], grad, atol=atol, rtol=1e-4, msg=f"gradient of {name!r}")


def build_simclr(chunk_size=None):
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("simclr", [encoder], {"temperature": 0.2, "projection_dim": 16, "chunk_size": chunk_size})


def test_split_rows_checks_its_input():
    inputs = {"input_ids": torch.zeros(5, 3), "attention_mask": torch.ones(5, 3), "note": 7}
    chunks = split_rows(inputs, 2)
    assert [c["input_ids"].shape[0] for c in chunks] == [2, 2, 1] and chunks[2]["note"] == 7
    with pytest.raises(ValueError, match="disagree on the batch size"):
        split_rows({"a": torch.zeros(5), "b": torch.zeros(4)}, 2)
    with pytest.raises(ValueError, match="positive int"):
        split_rows(inputs, 0)


def test_simclr_gradients_equal_the_full_batch(data_root):
    """ConvNeXt (layer norm, no dropout): 12 rows per view in chunks of 5 give the plain gradients."""
    setup = tiny_setup("image", data_root, rows=12)
    views = make_views(build_simclr(), [setup], [raw_batch(setup, 12)], seed=1)
    plain, cached = build_simclr(None), build_simclr(5)
    _assert_same(_loss_and_grads(plain, lambda: plain(*views).loss),
                 _loss_and_grads(cached, lambda: cached(*views).loss))


def test_dropout_is_replayed_exactly_in_the_recomputation(data_root):
    """SimCSE-style text (two identical copies, dropout 0.1 ON): the chunked no-grad pass and the
    re-run must draw the same masks. Reference: the same chunks in the same order with a graph
    (one large batch would draw the masks in another order, so it cannot be the reference with
    dropout on). Without the RNG replay the gradients differ: the check can fail."""
    setup = tiny_setup("text", data_root, rows=10)
    encoder = setup.encoder
    assert encoder.model.config.hidden_dropout_prob > 0
    encoder.train()
    request = ViewRequest("augmented", {"num_views": 2, "policy": "dropout"})
    views = setup.domain.make_views(raw_batch(setup, 10), request, torch.Generator().manual_seed(0))["views"]

    def reference():
        torch.manual_seed(7)
        first, second = (torch.cat([encoder(**c).pooled for c in split_rows(v, 4)]) for v in views)
        return info_nce(first, second, temperature=0.05)

    def cached(preserve_rng_state=True):
        torch.manual_seed(7)
        first, second = (grad_cached_pooled(encoder, v, 4, preserve_rng_state) for v in views)
        return info_nce(first, second, temperature=0.05)

    expected = _loss_and_grads(encoder, reference)
    state_after_reference = torch.get_rng_state()
    _assert_same(expected, _loss_and_grads(encoder, cached))
    # the re-runs happen inside fork_rng: the caller's random stream is where the forward left it
    assert torch.equal(torch.get_rng_state(), state_after_reference)

    _, unreplayed = _loss_and_grads(encoder, lambda: cached(preserve_rng_state=False))
    worst = max(float((unreplayed[n] - g).abs().max()) for n, g in expected[1].items())
    assert worst > 1e-3, "without replaying the RNG the gradients should differ; dropout seems inactive"


def test_clip_gradients_equal_the_full_batch(data_root):
    """Image (ConvNeXt) and text (BERT, dropout off) sides on Flickr8k-like pairs, chunks of 4 of 10."""
    from tests.test_objective_clip import build_clip, pair_views

    views = pair_views(build_clip(), 10, seed=3)
    plain, cached = build_clip(chunk_size=None), build_clip(chunk_size=4)
    _assert_same(_loss_and_grads(plain, lambda: plain(*views).loss),
                 _loss_and_grads(cached, lambda: cached(*views).loss))


def test_grad_cache_matches_encode_views_without_grad(data_root):
    setup = tiny_setup("image", data_root, rows=6)
    views = make_views(build_simclr(), [setup], [raw_batch(setup, 6)], seed=2)[0]["views"]
    with torch.no_grad():
        plain = [f.pooled for f in encode_views(setup.encoder, views)]
        chunked = [f.pooled for f in encode_views(GradCache(setup.encoder, 4), views)]
    for a, b in zip(plain, chunked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_batch_norm_encoders_are_refused(data_root):
    setup = tiny_setup("image", data_root, architecture="resnet", rows=4)
    inputs = make_views(build_simclr(), [setup], [raw_batch(setup, 4)], seed=0)[0]["views"][0]
    setup.encoder.train()
    with pytest.raises(ValueError, match="rows do not interact.*BatchNorm2d"):
        grad_cached_pooled(setup.encoder, inputs, 2)


def _ddp_worker(views, sizes):
    """One rank of a real DistributedDataParallel step with GradCache (3 chunks on rank 0, 2 on 1)."""
    objective = convert_to_global_batchnorm(build_simclr(chunk_size=3))
    model = torch.nn.parallel.DistributedDataParallel(objective)
    rank = distributed.rank()
    start = sum(sizes[:rank])
    local = slice_rows(views, start, start + sizes[rank], sum(sizes))
    loss = model(*local).loss
    loss.backward()  # DDP averages the gradients here; a parameter marked ready twice would raise
    return {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in objective.named_parameters()}}


@pytest.mark.slow
def test_gradcache_under_distributed_data_parallel(data_root):
    """Two gloo processes under torch DDP with GradCache give one process's full-batch gradients."""
    setup = tiny_setup("image", data_root, rows=12)
    views = make_views(build_simclr(), [setup], [raw_batch(setup, 12)], seed=4)
    single = convert_to_global_batchnorm(build_simclr(None))
    loss, grads = _loss_and_grads(single, lambda: single(*views).loss)
    for result in run_in_processes(_ddp_worker, views, [7, 5]):
        torch.testing.assert_close(result["loss"], loss, atol=1e-5, rtol=1e-4)
        for name, grad in grads.items():
            torch.testing.assert_close(result["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def build_supcon(chunk_size=None):
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("supcon", [encoder], {"projection_dim": 16, "chunk_size": chunk_size})


def test_supcon_gradients_equal_the_full_batch(data_root):
    setup = tiny_setup("image", data_root, rows=12)
    views = make_views(build_supcon(), [setup], [raw_batch(setup, 12)], seed=2)
    plain, cached = build_supcon(None), build_supcon(5)
    _assert_same(_loss_and_grads(plain, lambda: plain(*views).loss),
                 _loss_and_grads(cached, lambda: cached(*views).loss))


def test_simcse_gradients_equal_the_full_batch(data_root):
    """Dropout off here, so the plain one-call pass and the chunked passes draw nothing random;
    the dropout replay itself is tested above."""
    setup = tiny_setup("text", data_root, rows=12)
    overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

    def build(chunk_size):
        torch.manual_seed(0)
        encoder = setup.domain.build_encoder(EncoderConfig("bert", "tiny", overrides=overrides))
        return build_objective("simcse", [encoder], {"chunk_size": chunk_size})

    views = make_views(build(None), [setup], [raw_batch(setup, 12)], seed=3)
    plain, cached = build(None), build(5)
    _assert_same(_loss_and_grads(plain, lambda: plain(*views).loss),
                 _loss_and_grads(cached, lambda: cached(*views).loss))
