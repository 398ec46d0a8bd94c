"""The overview's percentiles (nearest rank), without a daemon."""

from __future__ import annotations

import pytest

from sandboxd.service.stats import percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.9, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.9, 4.0),
        ([float(v) for v in range(1, 11)], 0.9, 9.0),
        ([5.0, 1.0, 3.0], 0.5, 3.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected
