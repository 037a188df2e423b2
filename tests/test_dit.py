"""Chapter 2: the Diffusion Transformer (`from_noise_to_images.dit`).

Pins the seed's configuration (12,351,760 parameters), every shape of the traced forward pass,
the 2D positional embedding's properties, attention against the explicit formula (and in fp32 under bf16 autocast), adaLN's
dependence on t, learning on a small subset, the construction and input errors, other sizes,
the adaLN-Zero variant, and the seed chapter's calls, unchanged.
"""
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from from_noise_to_images.dit import (DiT, AdaLN, Attention, PatchEmbed, TimestepEmbedding, EXPLICIT_MAX_TOKENS,
                                      explicit_attention, fused_attention_pays, sincos_1d, sincos_2d)
from from_noise_to_images import dit as dit_module
from from_noise_to_images.models import timestep_embedding

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(min(2, torch.get_num_threads()))


def _data_dir():
    for d in (os.environ.get("FNTI_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if d and (Path(d) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(): return Path(d)
    return None


def n_params(m): return sum(p.numel() for p in m.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return DiT(img_size=28, patch_size=4, in_channels=1, embed_dim=256, depth=6, num_heads=8, mlp_ratio=4.0).eval()


@pytest.fixture(scope="module")
def mnist_x():
    d = _data_dir()
    if d is None: pytest.skip("MNIST not found: set FNTI_DATA_DIR to a folder holding MNIST/raw/")
    from from_noise_to_images.core import mnist_tensors
    return mnist_tensors(subset=64, data_dir=d)[0]


# ---------------------------------------------------------------- parameter count

def test_param_count_matches_design(dit):
    assert n_params(dit) == 12_351_760
    b = dit.blocks[0]
    assert n_params(dit.patch_embed) == 4_352
    assert n_params(dit.pos_embed) == 0 and dit.pos_embed.pe.shape == (1, 49, 256)
    assert n_params(dit.time_embed) == 256 * 1024 + 1024 + 1024 * 1024 + 1024
    assert n_params(b.norm1) == n_params(b.norm2) == 1024 * 512 + 512
    assert not any(isinstance(m, nn.LayerNorm) and m.elementwise_affine for m in b.modules())
    assert (b.attn.qkv.in_features, b.attn.qkv.out_features, b.attn.out.in_features, b.attn.out.out_features) == (256, 768, 256, 256)
    assert [l.weight.shape for l in b.mlp if isinstance(l, nn.Linear)] == [(1024, 256), (256, 1024)]
    assert isinstance(dit.final_norm, nn.LayerNorm) and dit.final_norm.elementwise_affine
    assert dit.final_linear.weight.shape == (16, 256)
    assert len(dit.blocks) == 6 and isinstance(dit.blocks, nn.ModuleList)


def test_config_rebuilds_model(dit):
    assert dit.config == dict(img_size=28, patch_size=4, in_channels=1, embed_dim=256, depth=6, num_heads=8,
                              mlp_ratio=4.0, adaln_zero=False)
    twin = DiT(**dit.config)
    twin.load_state_dict(dit.state_dict())            # the fixed positional buffer is not part of the state
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    with torch.no_grad(): torch.testing.assert_close(twin(x, t), dit(x, t))


# ---------------------------------------------------------------- the traced forward pass

def test_trace_shapes(dit):
    x, t = torch.randn(3, 1, 28, 28), torch.rand(3)
    with torch.no_grad():
        tok = dit.patch_embed(x); assert tok.shape == (3, 49, 256)
        tok = dit.pos_embed(tok); assert tok.shape == (3, 49, 256)
        c = dit.time_embed(t); assert c.shape == (3, 1024)
        h = tok
        for blk in dit.blocks:
            h = blk(h, c); assert h.shape == (3, 49, 256)
        h = dit.final_linear(dit.final_norm(h)); assert h.shape == (3, 49, 16)
        v = dit.unpatchify(h); assert v.shape == (3, 1, 28, 28)
        torch.testing.assert_close(v, dit(x, t))


def test_patch_embed_is_a_linear_map_per_patch():
    pe = PatchEmbed(28, 4, 1, 256)
    x = torch.randn(2, 1, 28, 28)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 49, 16)      # row-major patches
    ref = patches @ pe.proj.weight.reshape(256, 16).T + pe.proj.bias
    torch.testing.assert_close(pe(x), ref, atol=1e-5, rtol=1e-5)


def test_unpatchify_inverts_patching(dit):
    x = torch.randn(2, 1, 28, 28)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 49, 16)
    assert torch.equal(dit.unpatchify(patches), x)


def test_scalar_and_batched_t_agree(dit):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        a, b, c = dit(x, 0.3), dit(x, torch.tensor(0.3)), dit(x, torch.full((2,), 0.3))
    torch.testing.assert_close(a, c); torch.testing.assert_close(b, c)


# ---------------------------------------------------------------- positional embedding

def test_pos_embedding_properties():
    P = sincos_2d(7, 256)
    assert P.shape == (49, 256)
    assert torch.cdist(P, P).fill_diagonal_(float("inf")).min() > 0.5            # unique per position
    assert P.abs().max() <= 1.0                                                    # bounded
    # first half codes the row, second half the column
    one_d = sincos_1d(torch.arange(7), 128)
    torch.testing.assert_close(P.view(7, 7, 256)[:, :, :128], one_d[:, None].expand(7, 7, 128))
    torch.testing.assert_close(P.view(7, 7, 256)[:, :, 128:], one_d[None].expand(7, 7, 128))
    # nearer patches more similar: along every row, similarity falls strictly with the offset
    S = P @ P.T
    rc = torch.stack(torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij"), -1).reshape(49, 2)
    for q in range(49):
        for axis in (0, 1):
            same = rc[:, 1 - axis] == rc[q, 1 - axis]
            off, sim = (rc[same, axis] - rc[q, axis]).abs(), S[q, same]
            for a in range(int(off.max())):
                assert sim[off == a].min() > sim[off == a + 1].max()
    # and overall, similarity decreases with grid distance
    dist = torch.cdist(rc.float(), rc.float()).flatten()
    corr = torch.corrcoef(torch.stack([dist, S.flatten()]))[0, 1]
    assert corr < -0.9


def test_pos_embed_is_a_buffer_that_adds(dit):
    assert not list(dit.pos_embed.parameters())
    assert "pe" in dict(dit.pos_embed.named_buffers())
    tok = torch.randn(2, 49, 256)
    torch.testing.assert_close(dit.pos_embed(tok), tok + sincos_2d(7, 256)[None])


# ---------------------------------------------------------------- attention

def test_sdpa_equals_explicit_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 8, 49, 32) for _ in range(3))
    ref = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(32), dim=-1) @ v
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v), ref, atol=1e-5, rtol=1e-5)
    out, w = explicit_attention(q, k, v, return_weights=True)
    torch.testing.assert_close(out, ref); torch.testing.assert_close(w.sum(-1), torch.ones(2, 8, 49))


def test_attention_takes_the_faster_kernel_for_the_device(monkeypatch):
    "Training on a CPU: the formula up to EXPLICIT_MAX_TOKENS tokens, the fused kernel past it; inference and GPUs: the fused kernel."
    calls, real = [], F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, *a, **kw: calls.append(q.shape[2]) or real(q, *a, **kw))
    torch.manual_seed(0)
    attn = Attention(64, 4)
    for n in (49, EXPLICIT_MAX_TOKENS, EXPLICIT_MAX_TOKENS + 1, 196):
        x = torch.randn(2, n, 64)
        torch.testing.assert_close(attn(x), attn(x, return_weights=True)[0], atol=1e-5, rtol=1e-5)
    assert calls == [EXPLICIT_MAX_TOKENS + 1, 196]
    with torch.no_grad(): attn(torch.randn(2, 49, 64))             # inference: the kernel's forward is the fast one
    with torch.inference_mode(): attn(torch.randn(2, 49, 64))
    assert calls[2:] == [49, 49]
    assert fused_attention_pays("cuda", 49) and fused_attention_pays("meta", 49) and fused_attention_pays("cpu", 49, backward=False)
    assert not fused_attention_pays("cpu", 49) and fused_attention_pays(torch.device("cpu"), 196)


def test_compiled_training_on_a_gpu_writes_attention_out():
    "Under torch.compile a CUDA GPU trains on short sequences with the formula (Inductor fuses it); eager, inference and long ones take the kernel."
    traced = lambda f: torch.compile(f, backend="eager", fullgraph=True)()   # TorchDynamo traces f; nothing is generated
    assert traced(lambda: fused_attention_pays("cuda", 49)) is False
    assert traced(lambda: fused_attention_pays("cuda", EXPLICIT_MAX_TOKENS + 1)) is True
    assert traced(lambda: fused_attention_pays("cuda", 49, backward=False)) is True
    assert traced(lambda: fused_attention_pays("mps", 49)) is True            # measured on CUDA only
    assert fused_attention_pays("cuda", 49) is True                           # eager: one kernel, fewer launches


@pytest.mark.parametrize("amp", [False, True])
def test_a_compiled_block_is_one_graph(amp, monkeypatch):
    "No graph break in a DiT block, with or without autocast (torch 2.11 broke every block at is_autocast_available)."
    from from_noise_to_images.dit import DiTBlock
    # as torch 2.11 had it: a function TorchDynamo does not trace, so calling it inside the block would split its graph
    monkeypatch.setattr(torch.amp, "is_autocast_available", torch._dynamo.disable(torch.amp.is_autocast_available))
    graphs = []
    def counting_backend(gm, example_inputs): graphs.append(gm); return gm.forward
    block = DiTBlock(32, 4, cond_dim=64)
    compiled = torch.compile(block, backend=counting_backend, fullgraph=True)   # fullgraph: a break raises
    x, c = torch.randn(2, 49, 32), torch.randn(2, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out, ref = compiled(x, c), block(x, c)
    assert len(graphs) == 1 and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_attention_module_paths_agree():
    torch.manual_seed(0)
    attn = Attention(256, 8)
    x = torch.randn(2, 49, 256)
    fused = attn(x)
    explicit, w = attn(x, return_weights=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 8, 49, 49)


def test_attention_maps_of_the_model(dit):
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    out, maps = dit.attention_maps(x, t)
    assert maps.shape == (6, 2, 8, 49, 49)
    torch.testing.assert_close(maps.sum(-1), torch.ones(6, 2, 8, 49))
    with torch.no_grad(): torch.testing.assert_close(out, dit(x, t), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- adaLN and the time embedding

def test_time_embedding_uses_chapter1_sinusoid():
    te = TimestepEmbedding(256, 1024)
    t = torch.rand(5)
    ref = te.mlp(timestep_embedding(t, 256))
    torch.testing.assert_close(te(t), ref)
    assert te(t).shape == (5, 1024) and te(0.5).shape == (1, 1024)


def test_adaln_formula_and_dependence_on_t():
    torch.manual_seed(0)
    te, ada = TimestepEmbedding(256, 1024), AdaLN(256, 1024)
    x = torch.randn(1, 49, 256).expand(3, -1, -1)
    cond = te(torch.tensor([0.0, 0.5, 1.0]))
    scale, shift = ada.proj(cond).chunk(2, -1)
    y = ada(x, cond)
    torch.testing.assert_close(y, F.layer_norm(x, (256,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None])
    assert (y[0] - y[1]).abs().mean() > 1e-2 and (y[1] - y[2]).abs().mean() > 1e-2
    # and so does the whole model: same input, different t, different velocity
    m = DiT(embed_dim=64, depth=2, num_heads=4)
    xi = torch.randn(1, 1, 28, 28)
    with torch.no_grad(): assert (m(xi, 0.1) - m(xi, 0.9)).abs().mean() > 1e-3


# ---------------------------------------------------------------- learning

def test_loss_falls_on_a_small_subset(mnist_x):
    from from_noise_to_images.flow import flow_matching_loss
    torch.manual_seed(0)
    m = DiT(embed_dim=64, depth=2, num_heads=4)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    x0 = mnist_x[:32]
    t_eval, x1_eval = torch.rand(32, generator=g), torch.randn(x0.shape, generator=g)
    with torch.no_grad(): before = flow_matching_loss(m, x0, t_eval, x1_eval).item()
    for _ in range(30):
        loss = flow_matching_loss(m, x0)
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): after = flow_matching_loss(m, x0, t_eval, x1_eval).item()
    assert after < 0.7 * before, (before, after)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, message", [
    (dict(img_size=28, patch_size=5), "img_size (28) must be divisible by patch_size (5)"),
    (dict(embed_dim=256, num_heads=6), "embed_dim (256) must be divisible by num_heads (6)"),
    (dict(embed_dim=18, num_heads=2), "embed_dim (18) must be divisible by 4"),
    (dict(img_size=0), "img_size must be a positive int, got 0"),
    (dict(patch_size=-4), "patch_size must be a positive int, got -4"),
    (dict(in_channels=0), "in_channels must be a positive int"),
    (dict(embed_dim=0), "embed_dim must be a positive int"),
    (dict(depth=0), "depth must be a positive int"),
    (dict(num_heads=0), "num_heads must be a positive int"),
    (dict(mlp_ratio=0), "mlp_ratio must be a positive number"),
    (dict(img_size=28.0), "img_size must be a positive int"),
])
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError) as e: DiT(**kwargs)
    assert message in str(e.value)


def test_forward_errors_name_expected_shape():
    m = DiT(embed_dim=32, depth=1, num_heads=4)
    for bad in (torch.randn(2, 3, 28, 28), torch.randn(2, 1, 32, 32), torch.randn(1, 28, 28)):
        with pytest.raises(ValueError) as e: m(bad, torch.rand(bad.shape[0]))
        assert "expected input of shape (B, 1, 28, 28)" in str(e.value) and str(tuple(bad.shape)) in str(e.value)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\)"):
        m(torch.randn(2, 1, 28, 28), torch.rand(3))


# ---------------------------------------------------------------- other sizes and the adaLN-Zero variant

@pytest.mark.parametrize("patch_size", [2, 4])
def test_other_sizes_rgb32(patch_size):
    m = DiT(img_size=32, patch_size=patch_size, in_channels=3, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)
    x = torch.randn(2, 3, 32, 32)
    assert m.patch_embed(x).shape == (2, (32 // patch_size) ** 2, 64)
    out = m(x, torch.rand(2))
    assert out.shape == (2, 3, 32, 32)
    out.pow(2).mean().backward()                         # gradients reach the input projection
    assert m.patch_embed.proj.weight.grad.abs().sum() > 0


def test_adaln_zero_variant():
    m = DiT(embed_dim=64, depth=2, num_heads=4, adaln_zero=True)
    assert m.config["adaln_zero"] is True
    x = torch.randn(3, 1, 28, 28)
    assert m(x, torch.rand(3)).abs().max().item() == 0.0            # zero output at init
    # every block starts as the identity
    h, c = torch.randn(3, 49, 64), m.time_embed(torch.rand(3))
    torch.testing.assert_close(m.blocks[0](h, c), h)
    # it still learns: after one step the output moves
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    (m(x, torch.rand(3)) - x).pow(2).mean().backward(); opt.step()
    assert m(x, torch.rand(3)).abs().max().item() > 0
    # the default configuration is untouched, the variant adds gates
    assert n_params(DiT(adaln_zero=True)) > 12_351_760 == n_params(DiT())


# ---------------------------------------------------------------- the seed chapter's calls, unchanged

def test_seed_api_calls_run_unchanged(tmp_path, monkeypatch):
    from from_noise_to_images import get_device
    from from_noise_to_images.dit import DiT, TimestepEmbedding, AdaLN
    from from_noise_to_images.train import Trainer
    from from_noise_to_images.sampling import sample
    from torch.utils.data import DataLoader, TensorDataset
    monkeypatch.chdir(tmp_path)
    device = torch.device("cpu")
    assert isinstance(get_device(), torch.device)

    model = DiT(
        img_size=28, patch_size=4, in_channels=1, embed_dim=256, depth=6, num_heads=8, mlp_ratio=4.0,
    ).to(device)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 12_351_760
    test_x, test_t = torch.randn(4, 1, 28, 28, device=device), torch.rand(4, device=device)
    with torch.no_grad():
        assert model(test_x, test_t).shape == test_x.shape
        x, t = torch.randn(1, 1, 28, 28, device=device), torch.tensor([0.5], device=device)
        patches = model.patch_embed(x); assert patches.shape == (1, 49, 256)
        assert model.pos_embed(patches).shape == (1, 49, 256)
        assert tuple(model.time_embed(t).shape) == (1, 1024)
        assert len(model.blocks) == 6
        assert model(x, t).shape == (1, 1, 28, 28)

    embed_dim = 256
    cond_dim = embed_dim * 4
    time_embed = TimestepEmbedding(embed_dim, cond_dim)
    adaln = AdaLN(embed_dim, cond_dim)
    with torch.no_grad():
        for tt in torch.linspace(0, 1, 3):
            cond = time_embed(tt.unsqueeze(0))
            params = adaln.proj(cond)
            scale, shift = params.chunk(2, dim=-1)
            assert scale.squeeze().numpy().shape == (256,) and shift.shape == (1, 256)

    images = torch.randn(16, 1, 28, 28).clamp(-1, 1)
    train_loader = DataLoader(TensorDataset(images, torch.zeros(16, dtype=torch.long)),
                              batch_size=8, shuffle=True, num_workers=0, drop_last=True)
    trainer = Trainer(model=model, dataloader=train_loader, lr=1e-4, weight_decay=0.01, device=device)
    losses = trainer.train(num_epochs=1)
    assert len(losses) == 1 and math.isfinite(losses[0])

    model.eval()
    with torch.no_grad():
        generated, trajectory = sample(model=model, num_samples=2, image_shape=(1, 28, 28), num_steps=50,
                                       device=device, return_trajectory=True)
        assert generated.shape == (2, 1, 28, 28) and len(trajectory) == 51
        dit_samples = sample(model, 2, (1, 28, 28), 50, device)
        assert dit_samples.shape == (2, 1, 28, 28)

    trainer.save_checkpoint("phase2_dit.pt")
    fresh = DiT(img_size=28, patch_size=4, in_channels=1, embed_dim=256, depth=6, num_heads=8, mlp_ratio=4.0)
    fresh.load_state_dict(torch.load("phase2_dit.pt", map_location=device)["model_state_dict"])
    ckpt = torch.load("phase2_dit.pt", weights_only=True)
    assert ckpt["model_class"] == "DiT" and DiT(**ckpt["model_config"]).config == model.config


def test_residual_stream_stays_in_the_parameters_dtype_under_autocast():
    "Under bf16 autocast the blocks' matmuls run in bf16, but the residual stream between blocks stays fp32, as in DiT's code."
    torch.manual_seed(0)
    model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    seen = []
    for b in model.blocks: b.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert seen == [(torch.float32, torch.float32)] * 2          # in bf16, updates below 1/256 of the stream would vanish
    assert out.dtype == torch.bfloat16                            # the last Linear still runs in bf16


def test_attention_runs_in_fp32_under_autocast(monkeypatch):
    """Under bf16 autocast q, k and v reach the attention in fp32 with autocast off inside it (`Attention.upcast`), by
    both routes (the formula to train on a CPU, SDPA for inference); with `upcast = False` they arrive in bf16 under
    autocast, as in the GPU runs that collapsed."""
    seen, real_explicit, real_sdpa = [], dit_module.explicit_attention, F.scaled_dot_product_attention
    def record(route, q, k, v): seen.append((route, q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
    monkeypatch.setattr(dit_module, "explicit_attention", lambda q, k, v, **kw: record("explicit", q, k, v) or real_explicit(q, k, v, **kw))
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, k, v, **kw: record("sdpa", q, k, v) or real_sdpa(q, k, v, **kw))
    torch.manual_seed(0)
    model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = model(x, t)
        with torch.no_grad(): model(x, t)
    f32, bf16 = torch.float32, torch.bfloat16
    assert seen == [("explicit", f32, f32, f32, False)] * 2 + [("sdpa", f32, f32, f32, False)] * 2
    assert trained.dtype == bf16 and trained.requires_grad       # the projections after it run under autocast again
    trained.float().square().mean().backward()                   # gradients flow back through the casts
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    seen.clear()
    for m in model.modules():
        if isinstance(m, Attention): m.upcast = False
    with torch.autocast("cpu", dtype=torch.bfloat16): model(x, t)
    assert seen == [("explicit", bf16, bf16, bf16, True)] * 2
    seen.clear(); model(x, t)                                    # without autocast nothing is cast
    assert seen == [("explicit", f32, f32, f32, False)] * 2
