"""``fxtrain.host`` — the PyTorch side: quantizers, converted layers, backends, drivers, training and the CLI.

A training step quantizes operands on the host, sends every conv/linear GEMM to a *backend* and continues in
float. A backend is anything implementing :class:`fxtrain.host.backend.Backend`; spec strings such as ``emu``,
``emu:fast``, ``float``, ``sim:verilator`` or ``serial:PORT@BAUD`` are mapped to one by
:func:`fxtrain.host.backend.open_backend`, the one registry.

Main modules
------------
backend
    The :class:`~fxtrain.host.backend.Backend` protocol and the spec-string registry.
quantize, layers
    Torch quantizers; ``FixedConv2d``/``FixedLinear`` and :func:`~fxtrain.host.layers.convert` (torch.ao style).
emulator, device, transport
    The exact and fast emulators; the ``Device`` driver of a board or of the RTL in simulation and its transports.
train, train_cli, models, datasets, idx
    The training loop of ``fxtrain train``, the models and the data.
timemodel, estimate_cli, demo, cli
    The time-per-epoch model, ``fxtrain estimate``, ``fxtrain demo`` and the ``fxtrain`` entry point.

May import: :mod:`fxtrain.sim` (the spec), ``numpy``, ``torch`` (the ``[train]`` extra) and, lazily, the transports'
``pyserial``/``cocotb``. Only ``cli`` refers to :mod:`fxtrain.boards` (by module name, for its sub-commands);
nothing here imports :mod:`fxtrain.rtl` except the simulation transport, through :mod:`fxtrain.sim.runner`.
"""
