"""vlda.distributed: no-ops in one process; sharding and gathering in a 2-process gloo group."""

from __future__ import annotations

import pytest
import torch

from vlda import distributed as D


def test_one_process_is_rank_zero_of_one_and_everything_is_a_no_op():
    x = torch.arange(6.0).reshape(3, 2)
    assert (D.rank(), D.world_size(), D.is_main(), D.initialised()) == (0, 1, True, False)
    assert D.gather_rows(x) is x
    assert D.shard_range(7) == range(7)
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    assert D.any_true(False) is False
    D.barrier()


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_shards_are_contiguous_disjoint_and_cover_every_row(n, world):
    shards = [D.shard_range(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        D.shard_range(4, 2, 2)


def _worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = torch.arange(7 * 3, dtype=torch.float64).reshape(7, 3)
        mine = rows[list(D.shard_range(7))]  # 3 rows on rank 0, 4 on rank 1: unequal counts
        out = {
            "rank": D.rank(),
            "world": D.world_size(),
            "gathered": D.gather_rows(mine),
            "broadcast": D.broadcast_object({"from": D.rank()}),
            "any_one": D.any_true(D.rank() == 1),
            "any_none": D.any_true(False),
        }
        D.barrier()
        torch.save(out, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_in_rank_order_and_agree(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    expected = torch.arange(7 * 3, dtype=torch.float64).reshape(7, 3)
    for r in range(2):
        out = torch.load(tmp_path / f"{r}.pt", weights_only=True)
        assert (out["rank"], out["world"]) == (r, 2)
        assert torch.equal(out["gathered"], expected)
        assert out["broadcast"] == {"from": 0}
        assert (out["any_one"], out["any_none"]) == (True, False)
