"""``fxtrain.host`` — the PyTorch side: quantizers, converted layers, backends, drivers, training and the CLI.

A training step quantizes operands on the host, sends every conv/linear GEMM to a *backend* and continues in
float. A backend is anything implementing :class:`fxtrain.host.backend.Backend`; spec strings such as ``emu``,
``emu:fast``, ``float``, ``sim:verilator`` or ``serial:PORT@BAUD`` are mapped to one by
:func:`fxtrain.host.backend.open_backend`, the one registry.

Main modules
------------
backend
    The :class:`~fxtrain.host.backend.Backend` protocol and the spec-string registry.
quantize, layers, convert
    Torch quantizers; ``FixedConv2d``/``FixedLinear``, their numerics (``FixedConfig``) and live state
    (``Offload``); :func:`~fxtrain.host.convert.convert` (a mapping table and ``from_float``, torch.ao style).
emulator, device, transport
    The exact and fast emulators; the ``Device`` driver of a board or of the RTL in simulation and its transports.
train, train_cli, progress, metrics, models, datasets, idx
    The training loop of ``fxtrain train``, its progress bar and metrics files (JSON, CSV, plot, TensorBoard),
    the models and the data.
timemodel, estimate_cli, demo, cli
    The time-per-epoch model, ``fxtrain estimate``, ``fxtrain demo`` and the ``fxtrain`` entry point.

May import: :mod:`fxtrain.sim` (the spec), ``numpy``, ``torch``/``tqdm``/``matplotlib`` (the ``[train]`` extra)
and, lazily, ``tensorboard`` and the transports' ``pyserial``/``cocotb``; ``backend``, ``device``, ``transport``,
``timemodel``, ``estimate_cli``, ``demo`` and ``cli`` import no torch. :mod:`fxtrain.boards` and
:mod:`fxtrain.rtl` only lazily: ``cli`` names the board sub-commands, ``timemodel``/``estimate_cli`` read the board
targets and the UART divisor.
"""
