"""Readers on fake trees of every benchmark's layout, layout variants, and bad inputs."""

import gc
import logging
import re
import shutil

import pytest

from fakes import expected_fake_counts, make_fake_benchmark
from vlda.data.benchmarks import get_benchmark, list_benchmarks
from vlda.data.readers import (
    gc_paused,
    load_domain,
    locate_domain,
    read_class_folders,
    read_image_list,
)

# Fake files are named "<split>_<class index>_<k>.png": the label a reader gives must be that
# index, whatever layout and list numbering the benchmark uses.
_FAKE_NAME = re.compile(r"_(\d{3})_\d+\.png$")

BUILTIN = [b for b in list_benchmarks() if not b.startswith("_")]


def _few_domains(bid):
    b = get_benchmark(bid)
    return list(b.domains[:2]) if b.num_classes > 100 else None


@pytest.mark.parametrize("bid", BUILTIN)
def test_every_benchmark_reads_its_canonical_layout(bid, tmp_path):
    b = get_benchmark(bid)
    domains = _few_domains(bid)
    root = make_fake_benchmark(bid, tmp_path, per_class=1, domains=domains)
    counts = expected_fake_counts(bid, per_class=1, domains=domains)
    for domain in domains or b.domains:
        for split in b.splits[domain]:
            data = load_domain(bid, domain, root, split)
            assert data.name == domain and data.split == split
            assert len(data) == counts[(domain, split)]
            assert data.classnames == b.classnames and data.prompt_names == b.prompt_names
            assert data.domain_prompt_name == b.domain_prompt_names[domain]
            assert data.class_counts() == [counts[(domain, split)] // b.num_classes] * len(
                b.classnames
            )
            for path, label in data.samples:
                assert path.is_absolute() and path.is_file()
                assert int(_FAKE_NAME.search(path.name).group(1)) == label


def test_benchmark_object_and_domain_alias_accepted(tmp_path):
    root = make_fake_benchmark("office31", tmp_path, per_class=1, domains=["amazon"])
    data = load_domain(get_benchmark("office31"), "a", root)
    assert data.name == "amazon" and len(data) == 31


@pytest.mark.parametrize("layout", ["official", "Dassl", "TLlib"])
def test_office31_layouts(layout, tmp_path):
    root = make_fake_benchmark("office31", tmp_path, per_class=1, domains=["dslr"], layout=layout)
    src = locate_domain("office31", "dslr", root)
    assert layout.lower() in src.layout.origin.lower()
    data = load_domain("office31", "dslr", root)
    assert [label for _, label in data.samples] == list(range(31))


@pytest.mark.parametrize("real_world", ["Real World", "Real_World", "real_world", "RealWorld"])
def test_officehome_domain_folder_spellings(real_world, tmp_path):
    make_fake_benchmark("officehome", tmp_path / "office_home", per_class=1, layout="official")
    (tmp_path / "office_home" / "Real_World").rename(tmp_path / "office_home" / real_world)
    # The root may be the dataset folder or its parent.
    for root in (tmp_path, tmp_path / "office_home"):
        data = load_domain("officehome", "real_world", root)
        assert len(data) == 65


def test_officehome_labels_follow_names_not_folder_sort(tmp_path):
    # Dassl-style tree: lower-case domain folders and class folders; "tv" must stay class 56.
    make_fake_benchmark("officehome", tmp_path, per_class=1, domains=["art"], layout="official")
    art = tmp_path / "Art"
    art.rename(tmp_path / "art")
    for folder in list((tmp_path / "art").iterdir()):
        folder.rename(folder.with_name(folder.name.lower()))
    data = load_domain("officehome", "art", tmp_path)
    by_folder = {p.parent.name: label for p, label in data.samples}
    assert by_folder["tv"] == 56
    assert by_folder["alarm_clock"] == 33
    assert by_folder["drill"] == 0


def test_domainnet_folder_fallback_reads_all_only(tmp_path):
    make_fake_benchmark("domainnet", tmp_path, per_class=1, domains=["sketch"])
    for f in tmp_path.glob("*.txt"):
        f.unlink()
    data = load_domain("domainnet", "sketch", tmp_path, "all")
    assert len(data) == 345 * 2
    assert {p.parent.name for p, label in data.samples if label == 308} == {"The_Eiffel_Tower"}
    with pytest.raises(FileNotFoundError, match="sketch_train.txt"):
        load_domain("domainnet", "sketch", tmp_path, "train")


def test_domainnet_split_files_in_splits_folder(tmp_path):
    make_fake_benchmark("domainnet", tmp_path, per_class=1, domains=["real"])
    (tmp_path / "splits").mkdir()
    for f in tmp_path.glob("*.txt"):
        f.rename(tmp_path / "splits" / f.name)
    src = locate_domain("domainnet", "real", tmp_path, "test")
    assert src.layout.origin == "Dassl"
    assert len(load_domain("domainnet", "real", tmp_path, "test")) == 345


def test_imageclef_pga_folders_fix_boele(tmp_path):
    root = make_fake_benchmark("imageclef", tmp_path, per_class=1, domains=["p"], layout="PGA")
    (root / "p" / "bottle").rename(root / "p" / "boele")
    data = load_domain("imageclef", "p", root)
    assert {label for p, label in data.samples if p.parent.name == "boele"} == {4}
    assert data.prompt_names[4] == "bottle"


def test_pacs_skips_known_broken_file(tmp_path):
    root = make_fake_benchmark("pacs", tmp_path, per_class=1, domains=["sketch"])
    broken = root / "images" / "sketch" / "dog" / "n02103406_4068-1.png"
    broken.write_bytes(b"broken")
    with open(root / "splits" / "sketch_train_kfold.txt", "a") as f:
        f.write("sketch/dog/n02103406_4068-1.png 1\n")
    data = load_domain("pacs", "sketch", root, "train")
    assert len(data) == 7
    assert broken not in [p for p, _ in data.samples]


def test_minidomainnet_labels_by_path_even_if_numbers_differ(tmp_path, caplog):
    root = make_fake_benchmark("minidomainnet", tmp_path, per_class=1, domains=["clipart"])
    lst = root / "splits_mini" / "clipart_test.txt"
    lines = lst.read_text().splitlines()
    # Renumber the classes in reverse: vlda must keep labelling by the class folder.
    lst.write_text(
        "\n".join(f"{ln.rsplit(' ', 1)[0]} {125 - int(ln.rsplit(' ', 1)[1])}" for ln in lines)
        + "\n"
    )
    with caplog.at_level(logging.WARNING, logger="vlda.data"):
        data = load_domain("minidomainnet", "clipart", root, "test")
    assert "differs from the class folder" in caplog.text
    names = get_benchmark("minidomainnet").classnames
    assert all(names[label] == p.parent.name for p, label in data.samples)


def test_visda_tllib_lists(tmp_path):
    root = make_fake_benchmark("visda2017", tmp_path, per_class=1, layout="TLlib")
    assert (root / "image_list" / "validation.txt").is_file()
    data = load_domain("visda2017", "real", root)
    assert [label for _, label in data.samples] == list(range(12))


# --- read_class_folders / read_image_list -----------------------------------------------------


def _touch_images(folder, names):
    from fakes import fake_image_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        (folder / n).write_bytes(fake_image_bytes((i,)))


def test_read_class_folders_sorted_without_classnames(tmp_path):
    for c in ["zebra", "ant", "Mule"]:
        _touch_images(tmp_path / c, ["1.png", "2.jpg"])
    (tmp_path / "notes.txt").write_text("not a class")
    (tmp_path / ".hidden").mkdir()
    samples, names = read_class_folders(tmp_path)
    assert names == ("Mule", "ant", "zebra")
    assert [label for _, label in samples] == [0, 0, 1, 1, 2, 2]


def test_read_class_folders_follows_given_order_and_matches_loosely(tmp_path):
    for c in ["alarm clock", "TV", "drill"]:
        _touch_images(tmp_path / c, ["a.png"])
    samples, names = read_class_folders(tmp_path, ["Drill", "tv", "Alarm_Clock"])
    assert names == ("Drill", "tv", "Alarm_Clock")
    assert {p.parent.name: label for p, label in samples} == {
        "drill": 0,
        "TV": 1,
        "alarm clock": 2,
    }


def test_read_class_folders_mismatch_errors(tmp_path):
    for c in ["cat", "dog", "kitten"]:
        _touch_images(tmp_path / c, ["a.png"])
    with pytest.raises(ValueError) as err:
        read_class_folders(tmp_path, ["cat", "dog", "bird"])
    msg = str(err.value)
    assert "'bird'" in msg and "'kitten'" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_class_folders(tmp_path / "nope")


def test_read_image_list(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nReal World/Mug/001.jpg 21\n\nc\\x.jpg 3\n")
    samples = read_image_list(lst, tmp_path / "imgs", label_offset=-1)
    assert samples == [
        (tmp_path / "imgs" / "Real World" / "Mug" / "001.jpg", 20),
        (tmp_path / "imgs" / "c" / "x.jpg", 2),
    ]


def test_read_image_list_malformed_line_names_file_and_line(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg 0\nb.jpg\n")
    with pytest.raises(ValueError, match=r"list\.txt:2: .*'b\.jpg'"):
        read_image_list(lst, tmp_path)
    lst.write_text("a.jpg 0\nb.jpg 0\n")
    with pytest.raises(ValueError, match=r"list\.txt:1: .*negative"):
        read_image_list(lst, tmp_path, label_offset=-1)


@pytest.mark.parametrize("enabled", [True, False])
def test_reading_restores_the_garbage_collector(tmp_path, enabled):
    """The collector is paused while samples are built and left as it was, also on an error."""
    make_fake_benchmark("domainnet", tmp_path, per_class=1, domains=["real"])
    seen = []
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with gc_paused():
            seen.append(gc.isenabled())
        assert len(load_domain("domainnet", "real", tmp_path, "test")) == 345
        assert gc.isenabled() is enabled
        lst = tmp_path / "real_test.txt"
        lst.write_text(lst.read_text() + "real/x/y.jpg 999\n")
        with pytest.raises(ValueError, match="outside"):
            load_domain("domainnet", "real", tmp_path, "test")
        assert gc.isenabled() is enabled and seen == [False]
    finally:
        gc.enable() if was else gc.disable()


def test_benchmark_list_with_bad_label_names_line(tmp_path):
    root = make_fake_benchmark("imageclef", tmp_path, per_class=1, domains=["c"])
    lst = root / "list" / "cList.txt"
    lst.write_text(lst.read_text() + "c/extra.png 12\n")
    with pytest.raises(ValueError, match=r"cList\.txt:13: label 12 is outside 0\.\.11"):
        load_domain("imageclef", "c", root)


# --- bad inputs ----------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="Office-Home root folder .* does not exist"):
        load_domain("officehome", "art", tmp_path / "missing")


def test_missing_domain_says_what_was_expected(tmp_path):
    make_fake_benchmark("officehome", tmp_path, per_class=1, domains=["art"])
    with pytest.raises(FileNotFoundError) as err:
        load_domain("officehome", "clipart", tmp_path)
    msg = str(err.value)
    assert "domain 'clipart'" in msg
    assert "image_list/Clipart.txt" in msg and "Clipart/<class>/" in msg


def test_listed_images_not_on_disk(tmp_path):
    root = make_fake_benchmark("office31", tmp_path, per_class=1, domains=["dslr"])
    (root / "dslr").rename(root / "dslr_moved")
    with pytest.raises(FileNotFoundError, match=r"images listed in .*dslr\.txt are not on disk"):
        load_domain("office31", "dslr", root)


def test_unknown_domain_and_split(tmp_path):
    with pytest.raises(ValueError, match="has no domain 'painting'"):
        load_domain("officehome", "painting", tmp_path)
    with pytest.raises(ValueError, match="no split 'train'"):
        load_domain("officehome", "art", tmp_path, "train")


def test_empty_domain(tmp_path):
    make_fake_benchmark("demo_digits", tmp_path, per_class=1)
    for png in (tmp_path / "faded").rglob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match="has no images"):
        load_domain("demo_digits", "faded", tmp_path)


def test_class_folder_mismatch_in_benchmark(tmp_path):
    make_fake_benchmark("demo_digits", tmp_path, per_class=1)
    shutil.rmtree(tmp_path / "inverted" / "7")
    (tmp_path / "inverted" / "seven").mkdir()
    with pytest.raises(ValueError, match=r"no folder for 1 class\(es\) \['7'\].*'seven'"):
        load_domain("demo_digits", "inverted", tmp_path)


def test_a_benchmark_class_folder_without_images_is_a_warning(tmp_path, caplog):
    root = make_fake_benchmark("office31", tmp_path / "o31", per_class=1, domains=["amazon"], layout="official")
    folder = next(p for p in root.rglob("*") if p.is_dir() and p.name == "mug")
    for f in folder.iterdir():
        f.unlink()
    with caplog.at_level(logging.WARNING, logger="vlda.data"):
        data = load_domain("office31", "amazon", root)
    assert data.num_classes == 31 and data.class_counts()[data.classnames.index("mug")] == 0
    assert any("no image of class(es) ['mug']" in r.getMessage() and "31 classes" in r.getMessage()
               for r in caplog.records)
