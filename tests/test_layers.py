"""Offloaded FixedConv2d/FixedLinear (fxtrain.host.layers) against float64 PyTorch within bounds computed from
the formats, plus conversion, weight storage and error handling."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fxtrain.host.emulator import ExactEmulator, FastEmulator
from fxtrain.host.backend import open_backend
from fxtrain.host.convert import convert, offload_stats
from fxtrain.host.layers import FixedConfig, FixedConv2d, FixedLinear, Offload, im2col
from fxtrain.host.models import build_model
from fxtrain.sim.gemm import EngineConfig

FORMATS = dict(weights="16.12", activations="16.10", gradients="16.13")


def _bounds(mode, cfg):
    """Half an ulp (nearest) or one ulp (stochastic) of each format: the largest rounding error."""
    factor = 0.5 if mode == "nearest" else 1.0
    return {name: factor * getattr(cfg, name).resolution
            for name in ("weights", "activations", "gradients", "forward_out", "grad_input_out", "grad_weight_out")}


def _check(layer, reference, x, grad_out, mode):
    """Forward output, input gradient and weight gradient of ``layer`` lie within the error bound of the float64
    ``reference(x, w)``: for a bilinear f, |f(x+dx, w+dw) - f(x, w)| <= f(|x|, e_w) + f(e_x, |w|) + f(e_x, e_w)
    plus the output rounding (times the number of GEMM outputs col2im adds into one input pixel)."""
    e = _bounds(mode, layer.fixed)
    w = layer.weight.detach().double().clone()
    xd = x.detach().double()
    g = grad_out.double()
    const = lambda t, v: torch.full_like(t, v)  # noqa: E731

    x_in = x.detach().clone().requires_grad_(True)
    y = layer(x_in)
    y.backward(grad_out)
    assert layer.stats["saturated"] == 0 and layer.stats["activation_saturated"] == 0
    assert layer.stats["gradient_saturated"] == 0

    def f(a, b):
        return reference(a, b)

    def vjp(a, b, gy, wrt):
        a = a.clone().requires_grad_(wrt == "x")
        b = b.clone().requires_grad_(wrt == "w")
        return torch.autograd.grad(f(a, b), a if wrt == "x" else b, gy)[0]

    ex, ew, eg = const(xd, e["activations"]), const(w, e["weights"]), const(g, e["gradients"])
    bound_y = f(xd.abs(), ew) + f(ex, w.abs()) + f(ex, ew) + e["forward_out"]
    ref_y = f(xd, w)
    assert ((y.double() - ref_y).abs() <= bound_y * (1 + 1e-9)).all(), float(((y.double() - ref_y).abs() - bound_y).max())

    cover = _cover_count(layer, xd)
    bound_dx = (vjp(xd, ew, g.abs(), "x") + vjp(xd, w.abs(), eg, "x") + vjp(xd, ew, eg, "x")
                + cover * e["grad_input_out"])
    ref_dx = vjp(xd, w, g, "x")
    assert ((x_in.grad.double() - ref_dx).abs() <= bound_dx * (1 + 1e-9)).all()

    bound_dw = vjp(xd.abs(), w, eg, "w") + vjp(ex, w, g.abs(), "w") + vjp(ex, w, eg, "w") + e["grad_weight_out"]
    ref_dw = vjp(xd, w, g, "w")
    assert ((layer.weight.grad.double() - ref_dw).abs() <= bound_dw * (1 + 1e-9)).all()
    # and the errors are not trivially zero: the layer really went through fixed point
    assert not torch.equal(layer.weight.grad.double(), ref_dw)


def _cover_count(layer, xd):
    """How many GEMM outputs (patch positions) col2im adds into each input element."""
    if isinstance(layer, FixedLinear):
        return torch.ones_like(xd)
    ones = torch.ones_like(xd).requires_grad_(True)
    cols = im2col(ones, layer.kernel_size, layer.stride, layer.padding)
    (count,) = torch.autograd.grad(cols, ones, torch.ones_like(cols))
    return count


CONV_CASES = [  # batch, in, out, size, kernel, stride, padding
    (2, 1, 3, 8, 3, 1, 0),
    (3, 2, 4, 9, 3, 2, 1),
    (1, 3, 2, 7, (3, 2), (1, 2), (2, 0)),
    (2, 4, 5, 6, 1, 1, 0),
    (1, 1, 1, 5, 5, 1, 0),  # K = 25, one output pixel
]


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_fixed_conv2d_within_format_bounds(case, mode):
    batch, cin, cout, size, kernel, stride, padding = case
    seed = hash(case) % 1000
    print("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    fixed = FixedConfig(rounding=mode, master_weights="float", **FORMATS)
    layer = FixedConv2d(cin, cout, kernel, stride, padding, bias=False, fixed=fixed,
                        offload=Offload(ExactEmulator(seed=seed), seed))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.3)
    x = torch.randn(batch, cin, size, size, generator=gen)
    out_shape = F.conv2d(x, layer.weight, stride=stride, padding=padding).shape
    grad_out = torch.randn(out_shape, generator=gen) * 0.05
    _check(layer, lambda a, w: F.conv2d(a, w, stride=layer.stride, padding=layer.padding), x, grad_out, mode)


@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 17, 3), (16, 120, 84)])
def test_fixed_linear_within_format_bounds(shape, mode):
    batch, fin, fout = shape
    seed = fin * 31 + fout
    print("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    fixed = FixedConfig(rounding=mode, master_weights="float", **FORMATS)
    layer = FixedLinear(fin, fout, bias=False, fixed=fixed, offload=Offload(FastEmulator(seed=seed), seed))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.3)
    x = torch.randn(batch, fin, generator=gen)
    grad_out = torch.randn(batch, fout, generator=gen) * 0.05
    _check(layer, lambda a, w: a @ w.t(), x, grad_out, mode)


def test_convert_keeps_parameters_and_counts_macs():
    """convert() swaps every conv/linear, keeps the state dict, and LeNet's forward sends 281,640 MACs/image."""
    model = build_model("lenet", seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    backend = FastEmulator()
    convert(model, backend, master_weights="float")
    assert sum(isinstance(m, (FixedConv2d, FixedLinear)) for m in model.modules()) == 5
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    model.eval()
    with torch.no_grad():
        model(torch.rand(3, 1, 28, 28))
    assert backend.counters["macs"] == 3 * (24 * 24 * 6 * 25 + 8 * 8 * 16 * 150 + 256 * 120 + 120 * 84 + 84 * 10)
    assert offload_stats(model)["macs"] == backend.counters["macs"]


def test_fixed_master_weights_live_on_the_grid_and_nearest_loses_tiny_updates():
    """master_weights='fixed': after a training forward the weights are multiples of 2**-FL; with nearest rounding
    an update below half an ulp disappears, with stochastic rounding it survives on average."""
    torch.manual_seed(0)
    results = {}
    for mode in ("nearest", "stochastic"):
        fixed = FixedConfig(weights="16.8", activations="16.8", gradients="16.8", rounding=mode)
        layer = FixedLinear(200, 50, bias=False, fixed=fixed, offload=Offload(FastEmulator(seed=2), 2))
        x = torch.randn(4, 200)
        layer(x)
        scaled = layer.weight.detach() * 256
        assert torch.equal(scaled, scaled.round())
        start = layer.weight.detach().clone()
        with torch.no_grad():
            layer.weight.add_(0.2 / 256)  # a fifth of an ulp
        layer(x)
        results[mode] = float((layer.weight.detach() - start).mean() * 256)
    assert results["nearest"] == 0.0
    assert abs(results["stochastic"] - 0.2) < 0.02


def test_bad_configurations_raise_clear_errors():
    backend = ExactEmulator()
    with pytest.raises(ValueError, match="not of the form"):
        FixedConfig(weights="16/8")
    with pytest.raises(ValueError, match="shifts 0 to 32"):
        FixedConfig(weights="16.2", activations="16.2", forward_out="16.8")
    with pytest.raises(ValueError, match="must be 'fixed' or 'float'"):
        FixedConfig(master_weights="double")
    with pytest.raises(ValueError, match="wider than the engine"):
        convert(nn.Sequential(nn.Linear(2, 2)), ExactEmulator(EngineConfig(wl=8)), weights="16.8")
    with pytest.raises(ValueError, match="engine's word length"):
        FixedConfig(forward_out="8.4")
    with pytest.raises(ValueError, match="8-bit words"):
        Offload(ExactEmulator(EngineConfig(wl=8))).check(FixedConfig())
    with pytest.raises(TypeError, match="must implement fxtrain.host.backend.Backend"):
        Offload(object())
    with pytest.raises(ValueError, match="Rounding mode must be"):
        FixedConfig(rounding="up")
    fixed = FixedConfig()
    with pytest.raises(ValueError, match="groups=1"):
        convert(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), backend, fixed)
    with pytest.raises(ValueError, match=r"did not find: \['fc'\]"):
        convert(nn.Sequential(nn.Conv2d(4, 4, 3)), backend, fixed, layer_configs={"fc": None})
    layer = FixedConv2d(1, 1, 5, fixed=fixed, offload=Offload(backend))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        layer(torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.full((1, 1, 6, 6), float("nan")))


def test_convert_names_layers_by_qualified_name_and_applies_per_layer_configs():
    """convert() keys each layer by its qualified name (the same in every conversion, whatever was converted
    before in the process), shares one Offload attached to the model, and takes per-layer numerics from
    layer_configs (None keeps a layer in float)."""
    from fxtrain.host.convert import get_offload
    from fxtrain.sim.rounding import RoundingMode

    def model():
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(8, 4)),
                             nn.Linear(4, 2))

    backend = ExactEmulator()
    first = convert(model(), backend, seed=3)
    second = convert(model(), backend, layer_configs={"2.1": FixedConfig(weights="16.8", rounding="nearest"),
                                                      "3": None})
    assert [(n, m.key) for n, m in first.named_modules() if isinstance(m, (FixedConv2d, FixedLinear))] == \
        [("0", "0"), ("2.1", "2.1"), ("3", "3")]
    assert first[0].key == second[0].key
    assert get_offload(first).backend is backend and first[0].offload is first[3].offload is get_offload(first)
    assert get_offload(first) is not get_offload(second)
    assert type(second[3]) is nn.Linear
    assert second[2][1].fixed.weights.fl == 8 and second[2][1].fixed.rounding is RoundingMode.NEAREST
    assert second[0].fixed.rounding is RoundingMode.STOCHASTIC and second[0].fixed.weights.fl == 14
    with pytest.raises(ValueError, match="has not been converted"):
        get_offload(model())


@pytest.mark.slow
def test_device_driver_over_protocol_emulator_gives_identical_training_gemms():
    """The contract end to end: a LeNet forward + backward with the Device driver (protocol emulator transport)
    gives bit-identical outputs and gradients to the ExactEmulator with the same seed, and reuses resident
    weights (b_key)."""
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    results = []
    backends = [ExactEmulator(seed=5), open_backend("device:emu", seed=5)]
    for backend in backends:
        model = convert(build_model("lenet", seed=1), backend, seed=1)
        out = model(x)
        F.cross_entropy(out, y).backward()
        results.append([out.detach()] + [p.grad for p in model.parameters()])
    for ours, theirs in zip(*results):
        assert torch.equal(ours, theirs)
    assert backends[1].counters["b_entries_reused"] > 0


@pytest.mark.parametrize("kernel,stride,padding",
                         [((5, 5), (1, 1), (0, 0)), ((3, 2), (2, 1), (1, 2)), ((1, 1), (3, 3), (0, 0))])
def test_im2col_equals_unfold_and_its_col2im_backward_is_the_exact_gradient(kernel, stride, padding):
    """im2col's forward equals F.unfold (reordered) and its F.fold backward passes torch's gradcheck."""
    x = torch.randn(3, 4, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    cols = im2col(x, kernel, stride, padding)
    expected = torch.nn.functional.unfold(x, kernel, stride=stride, padding=padding).transpose(1, 2)
    assert torch.equal(cols, expected.reshape(cols.shape))
    assert torch.autograd.gradcheck(lambda t: im2col(t, kernel, stride, padding), (x,))
