"""Approximate-training methods of the research line, as options of ``fxtrain train`` (``docs/methods.md``).

* :mod:`.sampling` — column-row sampling (Adelman et al. 2021), GEMMs sent with a smaller K (or M, N);
* :mod:`.gradapprox` — weight-gradient approximation (Wang et al. 2019), a skipped or much smaller GEMM;
* :mod:`.rescaling` — kernel rescaling (de Gusmão et al. 2016), the first epochs at a lower resolution;
* :mod:`.schedule` — operand formats per epoch range;
* :mod:`.gemms` — the GEMM shapes a method sends per step, for the time model.

The training loop talks to one :class:`Methods` object through four hooks: ``attach`` (after the model is
converted), ``begin_epoch``, ``begin_step`` and ``inputs``; ``state_dict`` goes into the checkpoint.

Members
-------
MethodConfig
    The methods' settings (a field of ``TrainConfig``).
Methods
    Their state during a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import gradapprox, sampling
from .approx import LayerApprox
from .rescaling import KernelRescaler
from .schedule import apply_formats, formats_at, parse_schedule

__all__ = ["MethodConfig", "Methods"]


@dataclass
class MethodConfig:
    """Settings of the approximate-training methods (all off by default).

    Parameters
    ----------
    sampling : str, optional
        Column-row sampler: ``"topk"``, ``"crs"`` or ``"bernoulli"`` (:mod:`.sampling`); None: off.
    sample_ratio : float
        Fraction of the groups kept, ``0 < ratio <= 1``.
    sample_min_k : int
        At least this many groups are kept.
    sample_mode : str
        ``"forward"`` (sample input channels in the forward pass; backward through the kept ones) or
        ``"backward"`` (exact forward; sample output channels for the input gradient, examples for the weight
        gradient).
    sample_ends : bool
        Also sample the first convolution and the last linear layer (default False: they stay exact).
    gradapprox : str, optional
        ``"zero"``, ``"random"`` or ``"top1"`` (:mod:`.gradapprox`); None: off.
    gradapprox_schedule : str
        ``"every4"``, ``"alternate"`` or ``"all4"``.
    rescale_factor : int
        Kernel rescaling factor ``s`` (:mod:`.rescaling`); 1: off.
    rescale_epochs : int
        Epochs of the small phase.
    precision_schedule : str, optional
        ``EPOCH:W/A/G,...`` (:mod:`.schedule`); None: the run's formats throughout.
    """

    sampling: "str | None" = None
    sample_ratio: float = 0.5
    sample_min_k: int = 1
    sample_mode: str = "forward"
    sample_ends: bool = False
    gradapprox: "str | None" = None
    gradapprox_schedule: str = "every4"
    rescale_factor: int = 1
    rescale_epochs: int = 1
    precision_schedule: "str | None" = None

    def __post_init__(self):
        if self.sampling is not None and self.sampling not in sampling.SAMPLERS:
            raise ValueError(f"Unknown sampler {self.sampling!r}; known: {', '.join(sampling.SAMPLERS)}")
        if not (isinstance(self.sample_ratio, (int, float)) and 0 < self.sample_ratio <= 1):
            raise ValueError(f"sample_ratio must be in (0, 1], not {self.sample_ratio!r}")
        if not isinstance(self.sample_min_k, int) or self.sample_min_k < 1:
            raise ValueError(f"sample_min_k must be a positive integer, not {self.sample_min_k!r}")
        if self.sample_mode not in ("forward", "backward"):
            raise ValueError(f"sample_mode must be 'forward' or 'backward', not {self.sample_mode!r}")
        if self.gradapprox is not None and self.gradapprox not in gradapprox.MODES:
            raise ValueError(f"Unknown gradient approximation {self.gradapprox!r}; known: "
                             f"{', '.join(gradapprox.MODES)}")
        if self.gradapprox_schedule not in gradapprox.SCHEDULES:
            raise ValueError(f"Unknown gradient-approximation schedule {self.gradapprox_schedule!r}; known: "
                             f"{', '.join(gradapprox.SCHEDULES)}")
        if not isinstance(self.rescale_factor, int) or self.rescale_factor < 1:
            raise ValueError(f"rescale_factor must be a positive integer, not {self.rescale_factor!r}")
        if not isinstance(self.rescale_epochs, int) or self.rescale_epochs < 0:
            raise ValueError(f"rescale_epochs must be a non-negative integer, not {self.rescale_epochs!r}")
        if self.precision_schedule is not None:
            parse_schedule(self.precision_schedule)

    @property
    def needs_fixed_point(self) -> bool:
        return any((self.sampling, self.gradapprox, self.precision_schedule))

    @property
    def active(self) -> bool:
        return self.needs_fixed_point or self.rescale_factor > 1

    @property
    def run_suffix(self) -> str:
        """The methods in a run name (``-topk0.5f-zero-every4``...; empty without methods)."""
        parts = []
        if self.sampling:
            parts.append(f"{self.sampling}{self.sample_ratio:g}{self.sample_mode[0]}")
        if self.gradapprox:
            parts.append(f"{self.gradapprox}-{self.gradapprox_schedule}")
        if self.rescale_factor > 1:
            parts.append(f"rescale{self.rescale_factor}x{self.rescale_epochs}")
        if self.precision_schedule:
            parts.append("sched" + self.precision_schedule.replace(":", "_").replace("/", "-").replace(",", "+"))
        return "".join("-" + p for p in parts)

    def describe(self) -> str:
        parts = []
        if self.sampling:
            parts.append(f"{self.sampling} sampling ({self.sample_mode}, ratio {self.sample_ratio})")
        if self.gradapprox:
            parts.append(f"{self.gradapprox} weight gradients ({self.gradapprox_schedule})")
        if self.rescale_factor > 1:
            parts.append(f"kernel rescaling s={self.rescale_factor} for {self.rescale_epochs} epochs")
        if self.precision_schedule:
            parts.append(f"precision schedule {self.precision_schedule}")
        return ", ".join(parts) or "none"


def _fixed_layers(model):
    from ..layers import FixedConv2d, FixedLinear
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (FixedConv2d, FixedLinear))]


class Methods:
    """The methods of a run: their random generator, the global step, the rescaler, the format schedule.

    Parameters
    ----------
    cfg : MethodConfig
    seed : int
        Seeds the generator of the samplers and of ``random`` weight gradients.
    """

    def __init__(self, cfg: MethodConfig, seed: int = 0):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(int(seed) * 1_000_033 + 14)
        self.step = 0
        self.rescaler = None
        self.configs = []
        self.schedule = parse_schedule(cfg.precision_schedule) if cfg.precision_schedule else None

    def attach(self, model, offload, input_shape) -> None:
        """Give every fixed-point layer of ``model`` its :class:`LayerApprox` (layers in module order, which is
        call order for the models of :mod:`fxtrain.host.models`); set up rescaling for ``input_shape``.
        ``offload``: the converted model's :class:`~fxtrain.host.layers.Offload`, None for the float baseline."""
        if self.cfg.needs_fixed_point and offload is None:
            raise ValueError(f"Methods {self.cfg.describe()} need a fixed-point backend, not the float baseline")
        layers = _fixed_layers(model)
        self.configs = list({id(m.fixed): m.fixed for _, m in layers}.values())
        if offload is not None and (self.cfg.sampling or self.cfg.gradapprox):
            convs = [m for _, m in layers if hasattr(m, "kernel_size")]
            for position, (_, m) in enumerate(layers):
                conv_index = convs.index(m) if m in convs else None
                ends = position == 0 or position == len(layers) - 1
                m.approx = LayerApprox(self, conv_index, self.cfg.sampling is not None
                                       and (self.cfg.sample_ends or not ends))
        if self.cfg.rescale_factor > 1 and self.cfg.rescale_epochs > 0:
            self.rescaler = KernelRescaler(model, self.cfg.rescale_factor, input_shape)

    def prepare_resume(self, epoch: int, optimizer=None) -> None:
        """Give the model (and ``optimizer``'s parameter list) the shapes of ``epoch``'s phase before their
        checkpoints are loaded."""
        if self.rescaler is not None and epoch < self.cfg.rescale_epochs:
            self.rescaler.shrink(optimizer, transform=False)

    def begin_epoch(self, epoch: int, optimizer=None, log=print) -> None:
        """Switch formats and rescaling phase as ``epoch`` (0-based) requires."""
        if self.schedule is not None:
            formats = formats_at(self.schedule, epoch)
            changed = [fixed for fixed in self.configs if apply_formats(fixed, formats)]
            if changed:
                log(f"epoch {epoch + 1}: formats now {changed[0].describe()}")
        if self.rescaler is not None:
            if epoch < self.cfg.rescale_epochs and not self.rescaler.small:
                self.rescaler.shrink(optimizer)
                log(f"epoch {epoch + 1}: kernel rescaling, inputs and kernels 1/{self.cfg.rescale_factor}")
            elif epoch >= self.cfg.rescale_epochs and self.rescaler.small:
                self.rescaler.grow(optimizer)
                log(f"epoch {epoch + 1}: kernels upsampled to full size, full-resolution inputs")

    def begin_step(self, step: int) -> None:
        self.step = int(step)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The images as the current phase feeds them to the model."""
        return x if self.rescaler is None else self.rescaler.downsample(x)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.step = state["step"]
