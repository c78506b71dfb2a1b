"""The demo's tables over seeds: mean ± sample std against hand-computed values."""

from __future__ import annotations

import pytest

from vlda.demo.tables import (
    aggregate,
    cell,
    format_table,
    format_times,
    format_validators,
    mean_std,
)


def _seed(seed: int, last: float, selected: float, oracle: float, source: float | None, **extra: float) -> dict:
    return {"seed": seed, "target_acc_last": last, "target_acc_selected": selected, "target_acc_oracle": oracle,
            "source_acc": source, "seconds": 10.0 * seed, "selected_by": {"entropy": selected - 0.1}, **extra}


def test_mean_std_by_hand() -> None:
    # 0.5, 0.7, 0.9: mean 0.7, squared deviations 0.04 + 0 + 0.04, sample variance 0.08 / 2 = 0.04
    mean, std = mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    assert mean_std([0.25]) == (0.25, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_aggregate_and_format_by_hand() -> None:
    rows = [_seed(1, 0.5, 0.6, 0.7, 1.0, conflict_rate=0.2), _seed(2, 0.7, 0.6, 0.8, 0.9, conflict_rate=0.4),
            _seed(3, 0.9, 0.9, 0.9, 0.8, conflict_rate=0.6)]
    row = aggregate("dapl", rows)
    assert row["seeds"] == [1, 2, 3] and row["per_seed"] == rows
    assert row["target_acc_last"] == pytest.approx(0.7) and row["std"]["target_acc_last"] == pytest.approx(0.2)
    # selected 0.6, 0.6, 0.9: mean 0.7, deviations -0.1, -0.1, 0.2 -> variance 0.06 / 2 = 0.03
    assert row["target_acc_selected"] == pytest.approx(0.7)
    assert row["std"]["target_acc_selected"] == pytest.approx(0.03 ** 0.5)
    assert row["source_acc"] == pytest.approx(0.9) and row["std"]["source_acc"] == pytest.approx(0.1)
    assert row["selected_by"]["entropy"] == pytest.approx(0.6)
    assert row["selected_by_std"]["entropy"] == pytest.approx(0.03 ** 0.5)
    assert row["conflict_rate"] == pytest.approx(0.4) and row["seconds"] == pytest.approx(20.0)
    table = format_table([row])
    assert "0.700 ± 0.200" in table  # last
    assert "0.700 ± 0.173" in table  # selected: sqrt(0.03) = 0.1732
    assert "0.800 ± 0.100" in table  # oracle 0.7, 0.8, 0.9
    assert "0.900 ± 0.100" in table  # source
    assert "0.600 ± 0.173" in format_validators([row])
    times = format_times([row], 95.0, 2, 1)
    assert "20.0" in times and "95 s" in times and "2 worker" in times


def test_one_seed_shows_the_value_alone_and_missing_values_as_dash() -> None:
    row = aggregate("zeroshot", [_seed(1, 0.5, 0.4, 0.6, None)])
    assert row["std"]["target_acc_last"] is None and row["source_acc"] is None
    line = format_table([row]).splitlines()[2]
    assert line.split() == ["zeroshot", "0.500", "0.400", "0.600", "-", "10"]
    assert "±" not in line and "one seed per row" in format_table([row])
    assert cell(None, None) == "-" and cell(0.12345, 0.01) == "0.123 ± 0.010"
