"""The schematic figure of chapter 1 (kt_helpers.plots.plot_transfer_schematic)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from kt_helpers import plots  # noqa: E402


def test_the_schematic_names_the_models_the_data_and_the_four_steps():
    fig = plots.plot_transfer_schematic()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for word in ["source", "target", "transfer set", "1 select", "2 extract", "3 map", "4 fuse"]:
        assert word in texts, word
    plt.close(fig)
