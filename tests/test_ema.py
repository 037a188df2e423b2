"""`checkpoint.EMA`: the decay schedule min(decay, (1 + n) / (10 + n)) for the n-th update (counting from 1),
the average ema = d * ema + (1 - d) * p checked against a float64 reference computed here, buffers copied
as they are, a state_dict round trip that continues identically, and the decay check."""
import copy
import io

import pytest
import torch
import torch.nn as nn

from from_noise_to_images.checkpoint import EMA

DECAY = 0.7   # the warm-up (1 + n) / (10 + n) reaches 0.7 at n = 20 (21 / 30): both regimes occur within 30 updates
STEPS = 30


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))   # parameters and buffers (running stats, a counter)


def change(model, step):
    "New weights and new BatchNorm statistics, different at every step."
    g = torch.Generator().manual_seed(100 + step)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=g))
        model.train()(torch.randn(8, 4, generator=g) * (1 + step))


def expected_decay(n): return min(DECAY, (1 + n) / (10 + n))


def test_decay_schedule_warms_up_then_caps():
    ema = EMA(net(), DECAY)
    seen = []
    for n in range(1, STEPS + 1):
        seen.append(ema.current_decay()); ema.update(ema.model)
        assert ema.num_updates == n
    assert seen == pytest.approx([expected_decay(n) for n in range(1, STEPS + 1)], abs=1e-12)
    assert seen[0] == pytest.approx(2 / 11)                        # the first update mostly takes the model's weights
    assert seen[18] == pytest.approx(20 / 29) and seen[18] < DECAY   # n = 19: still warming up
    assert seen[19:] == [DECAY] * (STEPS - 19)                     # n >= 20: the cap
    assert EMA(net()).decay == 0.999 and EMA(net(), 0.5).current_decay() == pytest.approx(2 / 11)


def test_average_matches_a_hand_rolled_reference_and_buffers_are_copied():
    model = net()
    ema = EMA(model, DECAY)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    ref = {k: v.detach().double().clone() for k, v in model.named_parameters()}
    for n in range(1, STEPS + 1):
        change(model, n)
        d = expected_decay(n)
        for k, p in model.named_parameters(): ref[k] = d * ref[k] + (1 - d) * p.detach().double()
        ema.update(model)
        for k, p in ema.model.named_parameters():
            torch.testing.assert_close(p.double(), ref[k], rtol=1e-5, atol=1e-6)
        for (k, b), e in zip(model.named_buffers(), ema.model.buffers()):
            assert torch.equal(e, b), k                          # running stats and counter: copied, not averaged
    assert ema.model[1].num_batches_tracked.item() == STEPS
    # the average is not the model: it lags behind the latest weights
    assert not torch.allclose(ema.model[0].weight, model[0].weight)
    # the averaged copy is its own: changing the model leaves it alone until the next update
    before = copy.deepcopy(ema.model.state_dict())
    change(model, STEPS + 1)
    assert all(torch.equal(v, before[k]) for k, v in ema.model.state_dict().items())


def test_state_dict_round_trip_continues_identically():
    model = net()
    ema = EMA(model, DECAY)
    for n in range(1, 16):
        change(model, n); ema.update(model)
    buf = io.BytesIO(); torch.save(ema.state_dict(), buf); buf.seek(0)   # as a checkpoint stores it
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    resumed = EMA(other, 0.99)                                   # another decay and other weights, overwritten by the load
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.decay == DECAY and resumed.num_updates == 15
    assert resumed.current_decay() == ema.current_decay() == expected_decay(16)
    for n in range(16, STEPS + 1):                               # across the point (n = 20) where the cap takes over
        change(model, n); ema.update(model); resumed.update(model)
        for (k, a), b in zip(ema.model.state_dict().items(), resumed.model.state_dict().values()):
            assert torch.equal(a, b), (n, k)
    assert resumed.num_updates == ema.num_updates == STEPS


@pytest.mark.parametrize("decay", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), True, "0.9", None])
def test_decay_outside_open_unit_interval_is_rejected(decay):
    with pytest.raises(ValueError, match=r"ema_decay must be a number in \(0, 1\)"):
        EMA(net(), decay)
