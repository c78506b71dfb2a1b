"""Pinned facts about the benchmarks: class counts, label order at known indices, prompt names."""

import pytest

from vlda.data import catalog
from vlda.data.benchmarks import Benchmark, get_benchmark, list_benchmarks, register_benchmark
from vlda.data.layouts import norm_name

EXPECTED_IDS = {
    "office31",
    "officehome",
    "visda2017",
    "domainnet",
    "minidomainnet",
    "imageclef",
    "pacs",
    "vlcs",
    "s2rda49",
    "s2rda_ms39",
    "digits",
    "demo_digits",
}

NUM_CLASSES = {
    "office31": 31,
    "officehome": 65,
    "visda2017": 12,
    "domainnet": 345,
    "minidomainnet": 126,
    "imageclef": 12,
    "pacs": 7,
    "vlcs": 5,
    "s2rda49": 49,
    "s2rda_ms39": 39,
    "digits": 10,
    "demo_digits": 10,
}


def test_registry_ids():
    assert EXPECTED_IDS <= set(list_benchmarks())


@pytest.mark.parametrize("bid", sorted(NUM_CLASSES))
def test_class_counts_and_consistency(bid):
    b = get_benchmark(bid)
    assert len(b.classnames) == NUM_CLASSES[bid] == len(b.prompt_names)
    assert len({norm_name(c) for c in b.classnames}) == len(b.classnames)
    assert set(b.domain_prompt_names) == set(b.domains)
    assert set(b.splits) == set(b.domains)
    assert all("all" in s for s in b.splits.values())
    assert all(d in b.domains for d, _ in b.expected_counts)
    assert b.train_split in b.splits[b.domains[0]]
    assert b.test_split in b.splits[b.domains[0]]


@pytest.mark.parametrize(
    ("bid", "index", "name"),
    [
        ("officehome", 0, "Drill"),
        ("officehome", 33, "Alarm_Clock"),
        ("officehome", 56, "TV"),  # official list order; a sorted folder list would put it at 58
        ("officehome", 64, "Marker"),
        ("office31", 0, "back_pack"),
        ("office31", 30, "trash_can"),
        ("domainnet", 0, "aircraft_carrier"),
        ("domainnet", 66, "cello"),  # before cell_phone: not a plain lowercase sort
        ("domainnet", 67, "cell_phone"),
        ("domainnet", 308, "The_Eiffel_Tower"),
        ("domainnet", 327, "t-shirt"),
        ("domainnet", 344, "zigzag"),
        ("visda2017", 0, "aeroplane"),
        ("visda2017", 11, "truck"),
        ("imageclef", 4, "bottle"),
        ("imageclef", 11, "people"),
        ("pacs", 0, "dog"),
        ("vlcs", 4, "person"),
        ("s2rda49", 18, "filecabinet"),
        ("s2rda_ms39", 38, "watercraft"),
        ("digits", 0, "0"),
    ],
)
def test_known_indices(bid, index, name):
    assert get_benchmark(bid).classnames[index] == name


def test_prompt_name_fixes():
    clef = get_benchmark("imageclef")
    assert clef.prompt_names[4] == "bottle"
    assert "boele" not in clef.prompt_names
    assert clef.class_aliases["boele"] == "bottle"
    oh = get_benchmark("officehome")
    assert oh.prompt_names[56] == "tv"
    assert oh.prompt_names[33] == "alarm clock"
    assert oh.domain_prompt_names["real_world"] == "real world"
    dn = get_benchmark("domainnet")
    assert dn.prompt_names[308] == "The Eiffel Tower"
    assert dn.prompt_names[327] == "t-shirt"
    s49 = get_benchmark("s2rda49")
    named = dict(zip(s49.classnames, s49.prompt_names, strict=True))
    assert named["filecabinet"] == "file cabinet"
    assert named["trashbin"] == "trash bin"
    assert named["microwaves"] == "microwave"
    assert get_benchmark("s2rda_ms39").prompt_names[22] == "microwave"
    assert get_benchmark("digits").prompt_names[7] == "seven"


def test_sorted_lists_are_sorted_and_unsorted_ones_are_not():
    assert list(catalog.OFFICE31_CLASSES) == sorted(catalog.OFFICE31_CLASSES)
    assert list(catalog.S2RDA49_CLASSES) == sorted(catalog.S2RDA49_CLASSES)
    assert list(catalog.S2RDA_MS39_CLASSES) == sorted(catalog.S2RDA_MS39_CLASSES)
    assert set(catalog.S2RDA_MS39_CLASSES) < set(catalog.S2RDA49_CLASSES)
    for names in (catalog.OFFICEHOME_CLASSES, catalog.DOMAINNET_CLASSES):
        assert list(names) != sorted(names)
        assert list(names) != sorted(names, key=str.lower)


def test_minidomainnet_is_a_domainnet_subset():
    assert set(catalog.MINIDOMAINNET_CLASSES) <= set(catalog.DOMAINNET_CLASSES)
    assert len(set(catalog.MINIDOMAINNET_CLASSES)) == 126


def test_metrics_and_protocols():
    assert get_benchmark("visda2017").metric == "mean_class_accuracy"
    assert get_benchmark("officehome").metric == "accuracy"
    dn = get_benchmark("domainnet")
    assert (dn.train_split, dn.test_split) == ("train", "test")
    assert (
        dn.expected_counts[("clipart", "train")] + dn.expected_counts[("clipart", "test")]
        == dn.expected_counts[("clipart", "all")]
    )
    assert get_benchmark("office31").expected_counts[("amazon", "all")] == 2817
    assert get_benchmark("digits").label_remap["svhn"] == {10: 0}


def test_demo_digits():
    b = get_benchmark("demo_digits")
    assert b.domains == ("inverted", "faded")
    assert b.classnames == tuple(str(i) for i in range(10))
    assert b.prompt_names[0] == "zero" and b.prompt_names[9] == "nine"
    assert b.splits == {"inverted": ("all",), "faded": ("all",)}
    assert b.expected_counts == {}


def test_get_benchmark_errors_and_loose_ids():
    assert get_benchmark("office-home").id == "officehome"
    assert get_benchmark("Office31").id == "office31"
    with pytest.raises(ValueError, match="Did you mean 'officehome'") as err:
        get_benchmark("officehom")
    assert "domainnet" in str(err.value)
    with pytest.raises(ValueError, match="Known benchmarks"):
        get_benchmark("mnist-to-nowhere")


def test_resolve_domain():
    oh = get_benchmark("officehome")
    assert oh.resolve_domain("Real World") == "real_world"
    assert oh.resolve_domain("Real_World") == "real_world"
    assert oh.resolve_domain("rw") == "real_world"
    assert get_benchmark("visda2017").resolve_domain("validation") == "real"
    with pytest.raises(ValueError, match="Did you mean 'clipart'"):
        oh.resolve_domain("clipar")


def test_register_benchmark_validation():
    good = Benchmark(
        id="_test_tiny",
        name="Tiny",
        domains=("a", "b"),
        classnames=("x", "y"),
        prompt_names=("x", "y"),
        domain_prompt_names={"a": "a", "b": "b"},
    )
    register_benchmark(good)
    register_benchmark(good)  # equal: no-op
    assert get_benchmark("_test_tiny") is good
    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(
            Benchmark(
                id="_test_tiny",
                name="Other",
                domains=("a",),
                classnames=("x",),
                prompt_names=("x",),
                domain_prompt_names={"a": "a"},
            )
        )
    with pytest.raises(ValueError, match="prompt_names"):
        Benchmark("bad", "Bad", ("a",), ("x", "y"), ("x",), {"a": "a"})
    with pytest.raises(ValueError, match="differ only in case"):
        Benchmark("bad", "Bad", ("a",), ("Mug", "mug"), ("m", "m"), {"a": "a"})
    with pytest.raises(ValueError, match="metric"):
        Benchmark("bad", "Bad", ("a",), ("x",), ("x",), {"a": "a"}, metric="top5")
    assert hash(good) == hash("_test_tiny")
