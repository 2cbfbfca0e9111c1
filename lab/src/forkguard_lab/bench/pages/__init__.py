"""The generated pages, one module each - :mod:`.benchmarks` (docs/benchmarks.md),
:mod:`.memory` (docs/memory.md), :mod:`.readme` (the README's bench block) - and
:mod:`.shared`, the words more than one of them carries. A sentence lives in one module only.
"""

from __future__ import annotations

__all__: list[str] = []
