"""Approximate-training methods (fxtrain.host.methods): estimators, GEMM shapes sent, documented gradients,
kernel rescaling, precision schedule, the time model's GEMM list and resume."""


import pytest
import torch
import torch.nn.functional as F

from fxtrain.host.emulator import ExactEmulator, FastEmulator
from fxtrain.host.convert import convert, get_offload
from fxtrain.host.layers import FixedConfig, FixedConv2d, Offload
from fxtrain.host.methods import MethodConfig, Methods
from fxtrain.host.methods import gradapprox, sampling
from fxtrain.host.methods.gemms import method_gemms, predicted_epoch_s
from fxtrain.host.methods.rescaling import KernelRescaler
from fxtrain.host.methods.schedule import formats_at, parse_schedule
from fxtrain.host.models import build_model
from fxtrain.host.host_timing import TimedBackend
from fxtrain.sim.gemm import EngineConfig


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------------------------------------ estimators

def _variance(a, b, ratio, sampler, group=1):
    """Per-entry variance of the estimator (sampling module docstring), from its sampling probabilities."""
    a64, b64 = a.double(), b.double()
    scores = sampling.group_norms(a64, group, 1) * sampling.group_norms(b64, group, 0)
    c = scores.numel()
    k = sampling.sample_count(c, ratio, 1)
    share = scores / scores.sum()
    terms = torch.stack([a64[:, i * group:(i + 1) * group] @ b64[i * group:(i + 1) * group] for i in range(c)])
    if sampler == "crs":
        p = 0.9 * share + 0.1 / c
        return ((terms ** 2 / p[:, None, None]).sum(0) - terms.sum(0) ** 2) / k
    p = 0.9 * torch.clamp(k * share, 0, 1) + 0.1 / c
    return ((1 - p) / p)[:, None, None].mul(terms ** 2).sum(0)


@pytest.mark.parametrize("sampler", ["crs", "bernoulli"])
@pytest.mark.parametrize("group", [1, 3])
def test_sampled_estimator_is_unbiased_within_five_sigma(sampler, group):
    """Mean of T independent estimates of A @ B is within 5 standard errors of the exact product (standard error
    from the estimator's exact variance), for single columns and for channel groups."""
    seed = 1405 + group
    print("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 6 * group, generator=gen)
    b = torch.randn(6 * group, 3, generator=gen)
    trials = 3000
    total = torch.zeros(4, 3, dtype=torch.float64)
    for _ in range(trials):
        total += sampling.estimate(a, b, 0.5, sampler, gen, group=group)
    mean = total / trials
    exact = a.double() @ b.double()
    bound = 5 * (_variance(a, b, 0.5, sampler, group) / trials).sqrt()
    assert torch.all((mean - exact).abs() <= bound + 1e-12), (mean - exact, bound)
    # the test can fail: a biased estimator (weights dropped) is far outside the bound
    biased = sampling.estimate(a, b, 0.5, "topk", gen, group=group)
    assert torch.any((biased - exact).abs() > bound)


def test_topk_keeps_the_largest_scores_and_sample_count_follows_the_formula():
    scores = torch.tensor([0.5, 3.0, 0.1, 2.0, 2.5, 0.0])
    idx, weights = sampling.choose(scores, 3, "topk", torch.Generator())
    assert idx.tolist() == [1, 3, 4] and weights is None
    assert sampling.sample_count(6, 0.5, 1) == 3
    assert sampling.sample_count(6, 0.01, 2) == 2      # min_k
    assert sampling.sample_count(3, 0.9, 5) == 3       # at most C
    cols, _ = sampling.expand(torch.tensor([0, 2]), None, 4)
    assert cols.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]


def test_zero_scores_sample_uniformly_and_an_unknown_sampler_is_refused():
    """All scores zero: CRS draws uniformly (a group drawn c times of k weighs c * C / k, so the weights sum to C);
    Bernoulli keeps each group with 0.9 k / C + 0.1 / C."""
    idx, w = sampling.choose(torch.zeros(4), 2, "crs", torch.Generator().manual_seed(0))
    assert float(w.sum()) == 4.0 and all(float(v) in (2.0, 4.0) for v in w)
    idx, w = sampling.choose(torch.zeros(4), 2, "bernoulli", torch.Generator().manual_seed(0))
    assert torch.allclose(w, torch.full_like(w, 1 / (0.9 * 0.5 + 0.1 / 4)))
    with pytest.raises(ValueError, match="Unknown sampler 'rand'"):
        sampling.choose(torch.ones(3), 1, "rand", torch.Generator())


# ------------------------------------------------------------------------------------------------ layer GEMMs

def _conv_layer(backend, method_cfg, conv_index=1, sample=True, rounding="stochastic", cin=6, cout=4):
    fixed = FixedConfig(rounding=rounding, wl=backend.config.wl)
    layer = FixedConv2d(cin, cout, 3, padding=1, fixed=fixed, offload=Offload(backend, seed=5))
    torch.manual_seed(3)
    layer.weight.data.normal_(0, 0.3)
    methods = Methods(method_cfg, seed=2)
    from fxtrain.host.methods.approx import LayerApprox
    layer.approx = LayerApprox(methods, conv_index, sample)
    return layer, methods


def _step(layer, batch=2, size=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, layer.in_channels, size, size, generator=gen, requires_grad=True)
    y = layer(x)
    y.backward(torch.randn(y.shape, generator=gen) * 0.1)
    return x, y


@pytest.mark.parametrize("sampler", ["topk", "crs", "bernoulli"])
def test_forward_sampling_sends_smaller_gemms_and_the_counters_show_it(sampler):
    """Forward sampling of 3 of 6 input channels (3x3 kernels): forward K, input-gradient N and weight-gradient M
    are |S|*9 instead of 54, and the backend's MAC counter is the sum of what was sent."""
    timed = TimedBackend(ExactEmulator())
    layer, _ = _conv_layer(timed, MethodConfig(sampling=sampler, sample_ratio=0.5))
    x, _ = _step(layer)
    (fm, fk, fn, *_), (im, ik, inn, *_), (wm, wk, wn, *_) = timed.calls
    kept = fk
    assert kept % 9 == 0 and kept <= 54 and (kept == 27 if sampler != "bernoulli" else kept < 54)
    assert (fm, fn) == (50, 4) and (im, ik, inn) == (50, 4, kept) and (wm, wk, wn) == (kept, 50, 4)
    assert timed.counters["macs"] == sum(m * k * n for m, k, n, *_ in timed.calls) == 3 * 50 * kept * 4
    assert x.grad is not None and layer.weight.grad.shape == layer.weight.shape


def test_topk_sends_exactly_the_top_channels():
    """The forward GEMM's A operand is im2col of the 3 input channels with the largest ||X_c|| * ||W_c||."""
    calls = []

    class Recorder(FastEmulator):
        def gemm(self, a, b, shift, mode, *, b_key=None):
            calls.append((a.clone(), b.clone()))
            return super().gemm(a, b, shift, mode, b_key=b_key)

    layer, _ = _conv_layer(Recorder(), MethodConfig(sampling="topk", sample_ratio=0.5))
    x = torch.rand(2, 6, 5, 5, generator=torch.Generator().manual_seed(9))
    x[:, 4] *= 8   # channel 4's activations dominate
    layer.weight.data[:, 1] *= 8   # channel 1's weights dominate
    layer(x)
    w = layer.weight.detach().reshape(4, 6, 9)
    xr = x.detach()
    scores = torch.stack([torch.linalg.norm(F.unfold(xr[:, c:c + 1], 3, padding=1)) * torch.linalg.norm(w[:, c])
                          for c in range(6)])
    expect = sorted(torch.topk(scores, 3).indices.tolist())
    assert 4 in expect and 1 in expect
    a_sent = calls[0][0]
    from fxtrain.host.layers import im2col
    full = im2col(torch.round(xr * 1024) / 1024, (3, 3), (1, 1), (1, 1)) * 1024
    cols = torch.cat([torch.arange(c * 9, c * 9 + 9) for c in expect])
    assert torch.equal(torch.as_tensor(a_sent, dtype=torch.float64), full[:, cols].double()) or \
        torch.allclose(torch.as_tensor(a_sent).double(), full[:, cols].double(), atol=1.0)


def test_backward_sampling_keeps_forward_exact_and_shrinks_the_gradient_gemms():
    timed = TimedBackend(ExactEmulator())
    layer, _ = _conv_layer(timed, MethodConfig(sampling="topk", sample_ratio=0.5, sample_mode="backward"),
                           cout=6)
    _step(layer, batch=4)
    shapes = [c[:3] for c in timed.calls]
    # forward exact (100 rows = 4 examples x 25 positions); input grad K: 3 of 6 output channels; weight grad K:
    # 2 of 4 examples x 25 positions.
    assert shapes == [(100, 54, 6), (100, 3, 54), (54, 50, 6)]


def _reference_top1(layer, x, g):
    """dW of the top-1 sparse dY in float64 from the quantized operands."""
    cfg = layer.fixed
    a = torch.round(x.detach() * 2 ** cfg.activations.fl) / 2 ** cfg.activations.fl
    cols = F.unfold(a, 3, padding=1).transpose(1, 2).reshape(-1, 54).double()
    graw = torch.round(g * 2 ** cfg.gradients.fl).reshape(g.shape[0], g.shape[1], -1)   # B, N, P
    arg = graw.abs().argmax(2)
    sums = graw.sum(2)
    sparse = torch.zeros_like(graw)
    sparse.scatter_(2, arg[..., None], sums[..., None])
    sparse = sparse.permute(0, 2, 1).reshape(-1, g.shape[1]).double() / 2 ** cfg.gradients.fl
    return (cols.t() @ sparse).t()


def test_gradient_approximation_zero_random_top1_give_the_documented_dw():
    """zero: dW = 0 and no weight-gradient GEMM; random: N(0, 1/B^2) from the methods' generator, no GEMM;
    top1: dW from the per-(example, channel) largest dY carrying the channel sum, sent as a GEMM of inner
    dimension |R| <= B * min(P, N); input gradients stay exact (same as without the method)."""
    batch = 3
    gen = torch.Generator().manual_seed(21)
    x = torch.rand(batch, 6, 5, 5, generator=gen)
    g = torch.randn(batch, 4, 5, 5, generator=gen) * 0.05
    results = {}
    for mode in (None, "zero", "random", "top1"):
        timed = TimedBackend(FastEmulator(seed=1))
        layer, methods = _conv_layer(timed, MethodConfig(gradapprox=mode), rounding="nearest")
        xin = x.clone().requires_grad_(True)
        layer(xin).backward(g)
        results[mode] = (layer.weight.grad.reshape(4, -1).clone(), xin.grad.clone(), timed.calls, methods)
    exact_dx = results[None][1]
    for mode in ("zero", "random", "top1"):
        assert torch.equal(results[mode][1], exact_dx), mode
    assert torch.equal(results["zero"][0], torch.zeros(4, 54)) and len(results["zero"][2]) == 2
    expect = torch.randn(4, 54, generator=Methods(MethodConfig(), seed=2).generator) / batch
    assert torch.equal(results["random"][0], expect) and len(results["random"][2]) == 2
    calls = results["top1"][2]
    assert len(calls) == 3 and calls[2][1] <= batch * min(25, 4)
    ref = _reference_top1(layer, x, g).float()
    ulp = 2.0 ** -layer.fixed.grad_weight_out.fl
    assert torch.allclose(results["top1"][0], ref, atol=ulp)
    assert not torch.allclose(results["top1"][0], results[None][0], atol=10 * ulp)


def test_gradient_approximation_schedules_select_the_documented_layers_and_steps():
    pick = lambda s, steps=range(4), layers=range(10): {(i, t) for i in layers for t in steps  # noqa: E731
                                                       if gradapprox.selected(s, i, t)}
    assert pick("every4") == {(i, t) for i in (1, 5, 9) for t in range(4)}
    assert pick("alternate") == {(i, t) for i in (1, 3, 5, 7, 9) for t in (0, 2)}
    assert pick("all4") == {(i, 0) for i in range(1, 10)}
    with pytest.raises(ValueError, match="'often'"):
        gradapprox.selected("often", 1, 0)


def test_first_conv_and_last_linear_stay_exact_and_evaluation_is_exact():
    model = convert(build_model("lenet"), FastEmulator())
    methods = Methods(MethodConfig(sampling="topk", gradapprox="zero"))
    methods.attach(model, get_offload(model), (1, 28, 28))
    assert not model.conv1.approx.sample and not model.fc3.approx.sample and model.conv2.approx.sample
    assert model.conv1.approx.conv_index == 0 and model.conv2.approx.conv_index == 1
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    before = get_offload(model).backend.counters["macs"]
    model(x)
    exact = sum(g.macs for g in method_gemms(build_model("lenet"), (1, 28, 28), 2, MethodConfig())
                if g.kind == "forward")
    assert get_offload(model).backend.counters["macs"] - before == exact


# ------------------------------------------------------------------------------------------------ device bytes

def test_sampled_gemms_send_fewer_bytes_to_a_device():
    """Through the Device driver over the protocol emulator, forward sampling sends fewer bytes and MACs."""
    from fxtrain.host.backend import open_backend
    config = EngineConfig(rows=2, cols=2, wl=16, depth=32, max_k_log2=12)
    sent = {}
    for name, cfg in (("exact", MethodConfig()), ("topk", MethodConfig(sampling="topk", sample_ratio=0.34))):
        device = open_backend("device:emu", config=config, seed=4)
        layer, _ = _conv_layer(device, cfg, cin=3, cout=2)
        _step(layer, batch=1, size=4)
        sent[name] = (device.counters["bytes_sent"], device.counters["macs"])
        device.close()
    assert sent["topk"][0] < sent["exact"][0] and sent["topk"][1] * 3 == sent["exact"][1]


# ------------------------------------------------------------------------------------------------ time model

def test_method_gemms_equal_what_a_training_step_sends_and_change_the_prediction():
    """The time model's GEMM list of a method is the list of shapes the layers send (top-k, deterministic), and
    its predicted epoch time changes with the method."""
    cfg = MethodConfig(sampling="topk", gradapprox="top1", gradapprox_schedule="all4")
    timed = TimedBackend(FastEmulator())
    model = convert(build_model("lenet"), timed)
    methods = Methods(cfg)
    methods.attach(model, get_offload(model), (1, 28, 28))
    methods.begin_step(1)   # all4 approximates nothing at step 1: sampling only
    x = torch.rand(8, 1, 28, 28)
    F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    predicted = [(g.m, g.k, g.n) for g in method_gemms(build_model("lenet"), (1, 28, 28), 8, cfg, step=1)]
    assert [c[:3] for c in timed.calls] == predicted
    plain = method_gemms(build_model("lenet"), (1, 28, 28), 8, MethodConfig())
    assert sum(m * k * n for m, k, n in predicted) < sum(g.macs for g in plain)
    zero = method_gemms(build_model("lenet"), (1, 28, 28), 8, MethodConfig(gradapprox="zero"))
    assert len(zero) == len(plain) - 1
    base_s = predicted_epoch_s("icebreaker", build_model("lenet"), (1, 28, 28), 4, 8, "16.14", MethodConfig())
    for other in (cfg, MethodConfig(gradapprox="zero"), MethodConfig(rescale_factor=2, rescale_epochs=1)):
        assert predicted_epoch_s("icebreaker", build_model("lenet"), (1, 28, 28), 4, 8, "16.14", other) < base_s


# ------------------------------------------------------------------------------------------------ rescaling

def test_kernel_rescaling_preserves_a_layers_output_on_a_smooth_input():
    """A 3x3 kernel w' (centre tap) trained on the input sampled at every 2nd pixel, upsampled to 5x5 and divided
    by s^2 = 4, gives at every 2nd position the same output on the full-resolution smooth input up to the
    interpolation error. Derived bound: w = up(w')/4 is a symmetric tent of taps at offsets |j| <= 1 with
    sum(w) = sum(w'), so first-order terms cancel and |error| <= 1/2 * sum|w| * (max|Xxx| + 2 max|Xxy| + max|Xyy|)
    (second derivatives in pixel units). Without the 1/s^2 the output is 4 times too large (the test can fail)."""
    conv = torch.nn.Conv2d(1, 1, 5, bias=False)
    model = torch.nn.Sequential(conv)
    rescaler = KernelRescaler(model, 2, (1, 28, 28))
    rescaler.shrink()
    assert conv.weight.shape == (1, 1, 3, 3)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28, dtype=torch.float64),
                            torch.linspace(-1, 1, 28, dtype=torch.float64), indexing="ij")
    smooth = (torch.sin(1.3 * xx + 0.4) * torch.cos(0.9 * yy) + 0.5 * xx * yy + 1.0)[None, None].float()
    small_w = torch.zeros(1, 1, 3, 3)
    small_w[0, 0, 1, 1] = 1.3
    conv.weight.data = small_w
    with torch.no_grad():
        small_out = model(smooth[..., ::2, ::2])
        rescaler.grow()
        assert conv.weight.shape == (1, 1, 5, 5)
        full_out = model(smooth)[..., ::2, ::2]
    assert abs(float(conv.weight.detach().sum()) - 1.3) < 1e-6
    x = smooth[0, 0].double()
    xxd = (x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]).abs().max()
    yyd = (x[2:] - 2 * x[1:-1] + x[:-2]).abs().max()
    xyd = ((x[1:, 1:] - x[1:, :-1] - x[:-1, 1:] + x[:-1, :-1])).abs().max()
    bound = 0.5 * float(conv.weight.detach().abs().sum()) * float(xxd + 2 * xyd + yyd) * 1.01 + 1e-6
    error = float((full_out - small_out).abs().max())
    print("max error", error, "bound", bound, "output scale", float(small_out.abs().max()))
    assert error <= bound
    assert float((4 * full_out - small_out).abs().max()) > 100 * bound


def test_rescaling_resizes_lenet_and_resnet20_and_refuses_1x1_collapse():
    for name, shape in (("lenet", (1, 28, 28)), ("resnet20", (1, 28, 28)), ("resnet20", (3, 32, 32))):
        model = build_model(name, in_channels=shape[0])
        rescaler = KernelRescaler(model, 2, shape)
        rescaler.shrink()
        small = model(rescaler.downsample(torch.rand(2, *shape)))
        rescaler.grow()
        assert small.shape == (2, 10) and model(torch.rand(2, *shape)).shape == (2, 10)
    assert tuple(build_model("lenet").fc1.weight.shape) == (120, 256)
    with pytest.raises(ValueError, match="1x1"):
        KernelRescaler(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)), 3, (1, 8, 8))


# ------------------------------------------------------------------------------------------------ schedule

def test_precision_schedule_switches_formats_at_the_right_epoch():
    schedule = parse_schedule("0:8.6/8.4/8.8, 2:16.14/16.10/16.14")
    assert formats_at(schedule, 0) == formats_at(schedule, 1) == ("8.6", "8.4", "8.8")
    assert formats_at(schedule, 2) == formats_at(schedule, 7) == ("16.14", "16.10", "16.14")
    model = convert(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Linear(2, 2)), FastEmulator())
    fixed = model[0].fixed
    assert model[1].fixed is fixed
    methods = Methods(MethodConfig(precision_schedule="0:8.6/8.4/8.8,2:16.14/16.10/16.14"))
    methods.attach(model, get_offload(model), (4,))
    seen = []
    for epoch in range(4):
        methods.begin_epoch(epoch, log=lambda m: None)
        seen.append((str(fixed.weights), str(fixed.activations), fixed.shifts["forward"]))
    assert seen == [("8.6", "8.4", 6), ("8.6", "8.4", 6), ("16.14", "16.10", 14), ("16.14", "16.10", 14)]
    for bad, match in (("1:8.6/8.4/8.8", "start at epoch 0"), ("0:8.6/8.4", "three formats"),
                       ("0:8.6/8.4/8.8,0:16.14/16.10/16.14", "increase"), ("0:8,6/8.4/8.8", "not EPOCH")):
        with pytest.raises(ValueError, match=match):
            parse_schedule(bad)


def test_method_config_rejects_bad_values_and_methods_need_fixed_point():
    for kwargs, match in ((dict(sampling="half"), "Unknown sampler"), (dict(sample_ratio=0), "sample_ratio"),
                          (dict(sample_mode="both"), "sample_mode"), (dict(gradapprox="one"), "Unknown gradient"),
                          (dict(rescale_factor=0), "rescale_factor")):
        with pytest.raises(ValueError, match=match):
            MethodConfig(**kwargs)
    with pytest.raises(ValueError, match="need a fixed-point backend"):
        Methods(MethodConfig(sampling="crs")).attach(build_model("lenet"), None, (1, 28, 28))
