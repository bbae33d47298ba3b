"""MVaEMa's loss functions (emvision.modeling.losses), checked against hand computations.

This module loads losses.py by path (it imports only torch), so that the two processes the distributed
test spawns start without importing transformers; `test_the_package_exports_this_file` ties it to
`emvision.modeling.losses`.
"""

import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ports import free_port

LOSSES_FILE = Path(__file__).resolve().parents[2] / "modeling" / "losses.py"


def _load_losses():
    spec = importlib.util.spec_from_file_location("mvaema_losses", LOSSES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_losses = _load_losses()
contrastive_loss, gather_features = _losses.contrastive_loss, _losses.gather_features
itm_loss, lm_loss, sample_hard_negatives = _losses.itm_loss, _losses.lm_loss, _losses.sample_hard_negatives
linear_cross_entropy = _losses.linear_cross_entropy


def test_the_package_exports_this_file():
    import emvision.modeling.losses as package_losses

    assert Path(package_losses.__file__).resolve() == LOSSES_FILE


def _unit(rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)


def _hand_itc(image, text, temperature):
    """InfoNCE written out with Python floats: mean over rows of -log softmax, both directions."""
    n = len(image)
    sims = [[sum(a * b for a, b in zip(image[i], text[j])) / temperature for j in range(n)] for i in range(n)]

    def ce(matrix):
        total = 0.0
        for i, row in enumerate(matrix):
            total += math.log(sum(math.exp(value) for value in row)) - row[i]
        return total / n

    transposed = [[sims[j][i] for j in range(n)] for i in range(n)]
    return (ce(sims) + ce(transposed)) / 2


def test_itc_equals_the_formula_by_hand():
    image = _unit([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.1, 1.0], [0.3, 0.3, 0.3]])
    text = _unit([[0.9, 0.1, 0.4], [0.0, 1.0, 0.0], [-0.5, 0.2, 0.8], [1.0, -1.0, 0.2]])
    out = contrastive_loss(image, text, temperature=0.07)
    expected = _hand_itc(image.tolist(), text.tolist(), 0.07)
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    assert out.offset == 0 and out.logits_per_image.shape == (4, 4)
    assert torch.equal(out.positive_mask, torch.eye(4, dtype=torch.bool))
    assert torch.allclose(out.logits_per_text, out.logits_per_image.t())


def test_itc_with_shared_images_spreads_the_target():
    image = _unit([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 show the same image
    text = _unit([[1.0, 0.1], [0.8, 0.3], [0.1, 1.0]])
    ids = torch.tensor([7, 7, 3])
    out = contrastive_loss(image, text, temperature=0.5, image_ids=ids)
    logits = image @ text.t() / 0.5
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    i2t = -(F.log_softmax(logits, 1) * targets).sum(1).mean()
    t2i = -(F.log_softmax(logits.t(), 1) * targets).sum(1).mean()
    assert out.loss.item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-12)
    assert out.positive_mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_gather_without_a_process_group_is_the_identity():
    features = torch.randn(5, 3, requires_grad=True)
    gathered, offset = gather_features(features)
    assert gathered is features and offset == 0


def test_hard_negatives_never_pick_a_positive():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.randn(6, 6) + torch.eye(6) * 20.0  # the positive is by far the most similar
    positives = torch.eye(6, dtype=torch.bool)
    draws = torch.stack([sample_hard_negatives(similarity, positives, generator) for _ in range(500)])
    assert (draws != torch.arange(6)).all()
    assert len(draws.unique()) == 6  # every row found negatives, and all columns get used

    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    same_image = ids[:, None] == ids[None, :]
    draws = torch.stack([sample_hard_negatives(similarity, same_image, generator) for _ in range(500)])
    assert (ids[draws] != ids[None, :].expand_as(draws)).all()


def test_hard_negatives_follow_the_similarity():
    generator = torch.Generator().manual_seed(1)
    similarity = torch.tensor([[9.0, 5.0, 0.0, 0.0]] * 4)
    positives = torch.eye(4, dtype=torch.bool)
    draws = torch.stack([sample_hard_negatives(similarity, positives, generator) for _ in range(400)])
    row0 = draws[:, 0]
    assert (row0 == 1).float().mean() > 0.9  # column 1 is e^5 times likelier than 2 or 3


def test_rows_without_negatives_get_minus_one():
    similarity = torch.zeros(3, 3)
    all_same = torch.ones(3, 3, dtype=torch.bool)
    assert sample_hard_negatives(similarity, all_same).tolist() == [-1, -1, -1]


def test_itm_and_lm_losses():
    logits = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1.0, 0.0, 0.0])
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0))) + math.log(1 - 1 / (1 + math.exp(-0.5)))) / 3
    assert itm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)

    lm_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
    targets = torch.tensor([[0, -100, 2]])  # -100 is ignored
    manual = -(F.log_softmax(lm_logits[0, 0], -1)[0] + F.log_softmax(lm_logits[0, 2], -1)[2]) / 2
    assert lm_loss(lm_logits, targets).item() == pytest.approx(manual.item(), rel=1e-6)
    smoothed = lm_loss(lm_logits, targets, label_smoothing=0.1)
    assert smoothed.item() > lm_loss(lm_logits, targets).item()


def _projection_case(rows=37, width=8, vocab=50, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=generator, dtype=dtype)
    weight = torch.randn(vocab, width, generator=generator, dtype=dtype)
    bias = torch.randn(vocab, generator=generator, dtype=dtype)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    return hidden, weight, bias, targets


def _loss_and_gradients(loss_fn, hidden, weight, bias, targets, **kwargs):
    leaves = [None if tensor is None else tensor.clone().requires_grad_() for tensor in (hidden, weight, bias)]
    loss = loss_fn(*leaves, targets, **kwargs)
    gradients = torch.autograd.grad(loss, [leaf for leaf in leaves if leaf is not None])
    return loss.detach(), gradients


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk_size", [8, 37, 1024])  # several chunks with a remainder, one exact chunk, one partial
def test_linear_cross_entropy_equals_the_projection_then_lm_loss(label_smoothing, chunk_size, with_bias):
    hidden, weight, bias, targets = _projection_case()
    bias = bias if with_bias else None

    def plain(h, w, b, t, label_smoothing):
        return lm_loss(F.linear(h, w, b), t, label_smoothing)

    expected, expected_grads = _loss_and_gradients(plain, hidden, weight, bias, targets, label_smoothing=label_smoothing)
    loss, grads = _loss_and_gradients(linear_cross_entropy, hidden, weight, bias, targets, label_smoothing=label_smoothing,
                                      chunk_size=chunk_size)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(expected_grads) == (3 if with_bias else 2)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_linear_cross_entropy_scales_with_the_upstream_gradient_and_skips_frozen_inputs():
    hidden, weight, bias, targets = _projection_case(rows=20)
    h = hidden.clone().requires_grad_()
    (3.0 * linear_cross_entropy(h, weight, bias, targets, chunk_size=6)).backward()  # weight and bias frozen
    plain_h = hidden.clone().requires_grad_()
    (3.0 * lm_loss(F.linear(plain_h, weight, bias), targets)).backward()
    torch.testing.assert_close(h.grad, plain_h.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the loss alone
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias, targets, chunk_size=6),
                                   lm_loss(F.linear(hidden, weight, bias), targets), rtol=1e-5, atol=1e-6)


def test_linear_cross_entropy_takes_the_plain_path_outside_float32_and_checks_shapes():
    hidden, weight, bias, targets = _projection_case(dtype=torch.float64)
    loss, grads = _loss_and_gradients(linear_cross_entropy, hidden, weight, bias, targets)
    expected, expected_grads = _loss_and_gradients(lambda h, w, b, t: lm_loss(F.linear(h, w, b), t), hidden, weight, bias, targets)
    fused_node = linear_cross_entropy(*(t.float().requires_grad_() for t in (hidden, weight, bias)), targets).grad_fn
    plain_node = linear_cross_entropy(*(t.clone().requires_grad_() for t in (hidden, weight, bias)), targets).grad_fn
    assert "LinearCrossEntropy" in type(fused_node).__name__
    assert "LinearCrossEntropy" not in type(plain_node).__name__  # float64: F.linear, then lm_loss
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the plain path as well
        autocast_node = linear_cross_entropy(*(t.float().requires_grad_() for t in (hidden, weight, bias)), targets).grad_fn
    assert "LinearCrossEntropy" not in type(autocast_node).__name__
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="hidden must be"):
        linear_cross_entropy(hidden.float()[None], weight.float(), bias.float(), targets)


# ---------------------------------------------------------------------------------------------------
# Two processes (gloo): the gathered loss and its gradients equal one process on the global batch


def _worker(rank, world_size, port, image, text, ids, queue):
    import torch.distributed as dist

    losses = _load_losses()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        rows = slice(rank * 3, rank * 3 + 3) if rank == 0 else slice(3, 5)  # uneven: 3 + 2 rows
        local_image = image[rows].clone().requires_grad_(True)
        local_text = text[rows].clone().requires_grad_(True)
        temperature = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        out = losses.contrastive_loss(local_image, local_text, temperature, image_ids=ids[rows])
        out.loss.backward()
        # plain lists: shared-memory tensors would not outlive this process
        queue.put((rank, out.loss.item(), out.offset, local_image.grad.tolist(), local_text.grad.tolist(), temperature.grad.item()))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_match_one_process_on_the_global_batch():
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    image = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1)
    ids = torch.tensor([0, 1, 2, 2, 3])  # rows 2 and 3 (on different processes) share an image

    image_ref, text_ref = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    temperature_ref = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    reference = contrastive_loss(image_ref, text_ref, temperature_ref, image_ids=ids)
    reference.loss.backward()

    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [context.Process(target=_worker, args=(rank, 2, port, image, text, ids, queue)) for rank in range(2)]
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for worker in workers:
        worker.start()
    results = dict((item[0], item[1:]) for item in (queue.get(timeout=120) for _ in workers))
    for worker in workers:
        worker.join(timeout=60)
    for rank, rows in ((0, slice(0, 3)), (1, slice(3, 5))):
        loss, offset, image_grad, text_grad, temperature_grad = results[rank]
        assert loss == pytest.approx(reference.loss.item(), rel=1e-12)
        assert offset == rows.start
        # each process's gradient is W times the global one: data-parallel averaging divides it back
        assert torch.allclose(torch.tensor(image_grad, dtype=torch.float64) / 2, image_ref.grad[rows], atol=1e-12)
        assert torch.allclose(torch.tensor(text_grad, dtype=torch.float64) / 2, text_ref.grad[rows], atol=1e-12)
        assert temperature_grad == pytest.approx(temperature_ref.grad.item(), rel=1e-10)
