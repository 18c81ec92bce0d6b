"""The FPGA family of the platform a block elaborates for: where a block picks a vendor primitive or a timing
variant by family (``rtl/multiplier.py``, ``rtl/operand_memory.py``, ``rtl/engine.py``), it asks here.

Members
-------
platform_family(platform) -> str or None
    ``"ice40"``, ``"ecp5"``, ... (lower case) for an Amaranth platform object or a family name such as a board
    target's ``"ice40"``; None without a platform (simulation).
"""

from __future__ import annotations

__all__ = ["platform_family"]


def platform_family(platform):
    """The lower-case family name of ``platform`` (an Amaranth platform's ``family``, e.g. SiliconBlue's
    ``"iCE40"``, or a family name string), None for no platform or one without a family."""
    family = platform if isinstance(platform, str) else getattr(platform, "family", None)
    return family.lower() if isinstance(family, str) else None
