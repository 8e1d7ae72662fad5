"""A node with two fake T4s."""

import pytest
from plugin_factories import GiB

from dra_hami.plugin.claim import NodeDevice


@pytest.fixture
def devices() -> dict[str, NodeDevice]:
    return {
        # Listed out of PCI order on purpose: indices must follow the bus id, not the name.
        "hami-gpu-1": NodeDevice("hami-gpu-1", "GPU-11111111-1111-1111-1111-111111111111", 1, "0000:3b:00.0", 15 * GiB),
        "hami-gpu-0": NodeDevice("hami-gpu-0", "GPU-00000000-0000-0000-0000-000000000000", 0, "0000:af:00.0", 15 * GiB),
    }
