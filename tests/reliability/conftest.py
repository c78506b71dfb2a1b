"""The reliability suite's shared runs: the fake data and the uninterrupted DANN run that every
killed, resumed or disk-starved run is compared with (computed once per session)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import make_color_domains
from reliability.procs import dann_config, final_state, run_to_end, start_server


@pytest.fixture(scope="session")
def dann_data(tmp_path_factory):
    return make_color_domains(tmp_path_factory.mktemp("dann-data"))


@pytest.fixture(scope="session")
def dann_reference(tmp_path_factory, dann_data):
    """The uninterrupted run in its own process: (its final state, seconds from its first
    checkpoint to its end, seconds from its start to its end)."""
    tmp = tmp_path_factory.mktemp("dann-reference")
    out = tmp / "run"
    start_server()
    t0 = time.monotonic()
    run_to_end(["train", "-c", str(dann_config(tmp, dann_data, out)), "-q"], tmp / "log.txt")
    total = time.monotonic() - t0
    times = [json.loads(line)["time_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return final_state(out), times[-1] - times[0], total
