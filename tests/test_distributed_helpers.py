"""kt_helpers.distributed in one process: oracles, properties and validation (no launcher)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kt_helpers import distributed, fusion, models, train
from kt_helpers.distributed import TeacherCache, exact_kd_loss


def _batch(n: int = 12, C: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(n, C, generator=gen, requires_grad=True)
    teacher = 3 * torch.randn(n, C, generator=gen)
    y = torch.randint(0, C, (n,), generator=gen)
    y[n // 3 :] = -1
    return student, teacher, y


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_in_one_process_the_exact_loss_is_kd_loss(alpha):
    student, teacher, y = _batch()
    cache = TeacherCache.from_logits(teacher, temperature=3.0)
    ours = exact_kd_loss(student, y, cache.kl(student, torch.arange(len(y))), alpha=alpha, temperature=3.0,
                         num_labelled=int((y >= 0).sum()), num_samples=len(y))
    book = fusion.kd_loss(student, teacher, y, alpha=alpha, temperature=3.0)
    assert torch.allclose(ours, book, rtol=1e-6, atol=1e-7)


def test_shares_of_any_split_sum_to_the_global_loss_and_gradient():
    # Two "processes" in one: each returns W * its share; DDP would average the gradients.
    student, teacher, y = _batch()
    cache = TeacherCache.from_logits(teacher, temperature=2.0)
    counts = dict(num_labelled=int((y >= 0).sum()), num_samples=len(y))
    book = fusion.kd_loss(student, teacher, y, alpha=0.5, temperature=2.0)
    (book_grad,) = torch.autograd.grad(book, student)
    shares = []
    for part in (torch.arange(0, 3), torch.arange(3, 12)):  # 3 labelled samples on one side only
        shares.append(exact_kd_loss(student[part], y[part], cache.kl(student[part], part), alpha=0.5,
                                    temperature=2.0, world_size=2, **counts))
    average = sum(shares) / 2
    (grad,) = torch.autograd.grad(average, student)
    assert torch.allclose(average, book, rtol=1e-6)
    assert torch.allclose(grad, book_grad, rtol=1e-5, atol=1e-8)


def test_a_top_k_cache_with_every_class_is_the_whole_cache():
    student, teacher, _ = _batch()
    index = torch.arange(len(teacher))
    whole = TeacherCache.from_logits(teacher, temperature=2.0)
    top_all = TeacherCache.from_logits(teacher, temperature=2.0, top_k=10)
    assert torch.allclose(top_all.kl(student, index), whole.kl(student, index))


@pytest.mark.parametrize("k", [1, 3, 9])
def test_top_k_kl_is_the_kl_over_k_plus_one_outcomes(k):
    student, teacher, _ = _batch(seed=k)
    index = torch.arange(len(teacher))
    cache = TeacherCache.from_logits(teacher, temperature=2.0, top_k=k)
    # Oracle: merge the classes outside the teacher's top k into one outcome, by hand.
    p = F.softmax(teacher / 2.0, dim=1)
    q = F.softmax(student.detach() / 2.0, dim=1)
    top = p.topk(k, dim=1).indices
    mask = torch.zeros_like(p, dtype=torch.bool).scatter(1, top, True)
    p_k = torch.cat([p.gather(1, top), (p * ~mask).sum(1, keepdim=True)], dim=1)
    q_k = torch.cat([q.gather(1, top), (q * ~mask).sum(1, keepdim=True)], dim=1)
    oracle = (p_k * (p_k.log() - q_k.log())).sum(1)
    ours = cache.kl(student.detach(), index)
    assert torch.allclose(ours, oracle, rtol=1e-4, atol=1e-6)
    # Merging outcomes never increases a KL divergence.
    whole = TeacherCache.from_logits(teacher, temperature=2.0).kl(student.detach(), index)
    assert bool((ours <= whole + 1e-6).all())


def test_a_top_k_cache_stores_less():
    teacher = torch.randn(5, 10)
    assert TeacherCache.from_logits(teacher, temperature=1.0).nbytes_per_sample == 40
    cache = TeacherCache.from_logits(teacher, temperature=1.0, top_k=3)
    assert cache.indices.dtype == torch.int16
    assert cache.nbytes_per_sample == 3 * 4 + 3 * 2 + 4


def test_the_gradient_of_the_top_k_term_reaches_the_student():
    student, teacher, _ = _batch()
    cache = TeacherCache.from_logits(teacher, temperature=2.0, top_k=2)
    cache.kl(student, torch.arange(len(teacher))).sum().backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_in_one_process_the_collectives_are_the_identity():
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(distributed.global_sum(x), x)
    assert torch.equal(distributed.gather_rows(x, 3), x)


def test_sharded_accuracy_in_one_process_is_evaluate():
    train.seed_everything(0, num_threads=1)
    model = models.DigitCNN()
    X, y = torch.rand(30, 1, 8, 8), torch.randint(0, 10, (30,))
    correct, accuracy = distributed.sharded_accuracy(model, X, y, batch_size=7)
    assert accuracy == pytest.approx(train.evaluate(model, X, y)) and correct == round(accuracy * 30)


def test_train_step_with_micro_batches_takes_the_whole_batch_step():
    student, teacher, y = _batch(n=16)
    X = torch.rand(16, 8, 8)
    cache = TeacherCache.from_logits(teacher, temperature=2.0)

    def loss_fn(logits, X_b, y_b, idx, counts):
        return exact_kd_loss(logits, y_b, cache.kl(logits, idx), alpha=0.5, temperature=2.0,
                             num_labelled=counts[0], num_samples=counts[1])

    grads = []
    for chunks in (1, 4):
        train.seed_everything(0, num_threads=1)
        model = models.RowRNN()
        index = torch.arange(16)
        micro = [(X[i], y[i], i) for i in index.chunk(chunks)]
        distributed.train_step(model, micro, torch.optim.SGD(model.parameters(), lr=0.0), loss_fn)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_a_checkpoint_round_trips_atomically(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"epoch": 3, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    path = tmp_path / "run" / "student.pt"
    assert distributed.load_checkpoint(path) is None
    distributed.save_checkpoint(path, state)
    assert [p.name for p in path.parent.iterdir()] == ["student.pt"]  # no temporary left behind
    loaded = distributed.load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["weight"], model.weight.detach())
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(loaded["optimizer"])


def test_a_checkpoint_that_holds_code_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"epoch": 1, "hook": print}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        distributed.load_checkpoint(path)


def test_exact_kd_loss_validates_its_input():
    student, _, y = _batch()
    with pytest.raises(ValueError, match="'alpha' parameter of exact_kd_loss must be a float in \\[0, 1\\]"):
        exact_kd_loss(student, y, None, alpha=1.5, temperature=1.0, num_labelled=1, num_samples=1)
    with pytest.raises(ValueError, match="'soft_kl' parameter of exact_kd_loss is required when alpha < 1"):
        exact_kd_loss(student, y, None, alpha=0.5, temperature=1.0, num_labelled=1, num_samples=1)
    with pytest.raises(ValueError, match="'num_samples' parameter of exact_kd_loss must be > 0. Got 0"):
        exact_kd_loss(student, y, None, alpha=1.0, temperature=1.0, num_labelled=0, num_samples=0)


def test_teacher_cache_validates_top_k():
    with pytest.raises(ValueError, match="'top_k' parameter of TeacherCache.from_logits must be at most .* 10. Got 11"):
        TeacherCache.from_logits(torch.randn(2, 10), temperature=1.0, top_k=11)
    with pytest.raises(ValueError, match="'top_k' parameter of TeacherCache.from_logits must be an integer"):
        TeacherCache.from_logits(torch.randn(2, 10), temperature=1.0, top_k=0)


def test_train_step_refuses_no_micro_batches():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'micro_batches' parameter of train_step must not be empty"):
        distributed.train_step(model, [], torch.optim.SGD(model.parameters(), lr=0.1), lambda *a: None)
