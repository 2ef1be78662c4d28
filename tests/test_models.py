
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tasks
from core import config
from data import ShardBatches
from models import DigitsMLP, ResNet20, evaluate, flatten_params, load_flat_params, num_params


def seeded(model_class, seed, *args, **kwargs):
    torch.manual_seed(seed)
    return model_class(*args, **kwargs)


def test_resnet20_has_the_papers_parameter_count_and_shapes():
    model = ResNet20(num_classes=10)
    assert num_params(model) == 272_474
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_flat_params_exclude_batchnorm_buffers():
    model = ResNet20()
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers > 0
    assert flatten_params(model).numel() == 272_474


def test_flatten_load_round_trip_is_bitwise():
    source, target = seeded(ResNet20, 1), seeded(ResNet20, 2)
    flat = flatten_params(source)
    assert flat.dtype == torch.float32 and flat.dim() == 1 and flat.is_contiguous()
    load_flat_params(target, flat)
    for p, q in zip(source.parameters(), target.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(flatten_params(target), flat)


def test_flatten_follows_parameter_order():
    model = DigitsMLP(in_features=4, hidden=3, num_classes=2)
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(flatten_params(model), expected)


def test_flatten_into_out_reuses_the_buffer():
    model = seeded(DigitsMLP, 0)
    out = torch.empty(num_params(model))
    result = flatten_params(model, out=out)
    assert result is out and torch.equal(out, flatten_params(model))
    with pytest.raises(ValueError):
        flatten_params(model, out=torch.empty(3))


def test_load_keeps_parameter_and_optimizer_state_identity():
    model = seeded(DigitsMLP, 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    F.cross_entropy(model(torch.randn(4, 64)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    params_before = [id(p) for p in model.parameters()]
    momentum_before = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    load_flat_params(model, torch.zeros(num_params(model)))
    assert [id(p) for p in model.parameters()] == params_before
    for p, momentum in zip(model.parameters(), momentum_before):
        assert p in optimizer.state and torch.equal(optimizer.state[p]["momentum_buffer"], momentum)
        assert torch.count_nonzero(p) == 0


def test_load_accepts_other_dtypes_and_rejects_wrong_sizes():
    model = seeded(DigitsMLP, 0)
    flat = flatten_params(model)
    load_flat_params(model, flat.to(torch.bfloat16))
    assert flatten_params(model).dtype == torch.float32
    assert torch.equal(flatten_params(model), flat.to(torch.bfloat16).float())
    with pytest.raises(ValueError):
        load_flat_params(model, torch.zeros(num_params(model) + 1))


def test_models_are_seeded_by_torch():
    a = flatten_params(seeded(ResNet20, 0))
    b = flatten_params(seeded(ResNet20, 0))
    c = flatten_params(seeded(ResNet20, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    mlp = seeded(DigitsMLP, 0, in_features=8, num_classes=3)
    assert mlp(torch.randn(5, 8)).shape == (5, 3)


@pytest.mark.slow
def test_evaluate_returns_sane_values_and_restores_mode():
    model = seeded(ResNet20, 0)
    x, y = torch.randn(10, 3, 32, 32), torch.randint(0, 10, (10,))
    model.train()
    loss, accuracy = evaluate(model, x, y, batch_size=4)
    assert model.training
    assert 0.0 <= accuracy <= 1.0 and np.isfinite(loss) and loss > 0
    model.eval()
    evaluate(model, x, y)
    assert not model.training


@pytest.mark.slow
def test_mlp_learns_digits():
    cfg = dict(config.config, task="digits")
    data = tasks.get("digits").load_data(cfg)
    torch.manual_seed(0)
    model = tasks.get("digits").build_model(cfg, data)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # plain SGD
    batches = ShardBatches(data.train_x, data.train_y, np.arange(len(data.train_x)), batch_size=32, seed=0)
    for _ in range(300):
        bx, by = batches.next_batch()
        optimizer.zero_grad()
        F.cross_entropy(model(bx), by).backward()
        optimizer.step()
    loss, accuracy = evaluate(model, data.test_x, data.test_y)
    assert accuracy >= 0.9, (loss, accuracy)
