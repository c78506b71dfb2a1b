"""`vlda data check`: good and broken fake trees, through the API and through argparse."""

import argparse
import dataclasses
import shutil

import pytest

from fakes import expected_fake_counts, make_fake_benchmark
from vlda.cli.data_cmd import register
from vlda.data.benchmarks import get_benchmark, register_benchmark
from vlda.data.check import check_benchmark


def _variant(bid: str, per_class: int = 1, **fake_kwargs) -> str:
    """Register a copy of ``bid`` whose expected counts are those of its fake tree."""
    counts = expected_fake_counts(bid, per_class, **fake_kwargs)
    b = dataclasses.replace(get_benchmark(bid), id=f"_fake_{bid}", expected_counts=counts)
    register_benchmark(b, overwrite=True)
    return b.id


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="vlda")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def officehome(tmp_path):
    return make_fake_benchmark("officehome", tmp_path / "oh", per_class=1), _variant("officehome")


def test_good_tree_ok(officehome, capsys):
    root, bid = officehome
    report = check_benchmark(bid, root)
    assert report.ok, report.problems
    assert report.per_domain["art"]["counts"]["all"] == {"found": 65, "expected": 65}
    assert _cli("data", "check", bid, "--root", str(root)) == 0
    out = capsys.readouterr().out
    assert "Result: OK" in out and "art" in out


def test_missing_listed_file(officehome, capsys):
    root, bid = officehome
    (root / "Clipart" / "TV" / "all_056_0.png").unlink()
    report = check_benchmark(bid, root, domains=["clipart"], verify_images=False)
    assert not report.ok
    assert len(report.per_domain["clipart"]["missing"]) == 1
    assert any("do not exist" in p and "all_056_0.png" in p for p in report.problems)
    assert _cli("data", "check", bid, "--root", str(root), "--domains", "clipart") == 1
    assert "NOT OK" in capsys.readouterr().out


def test_extra_file(officehome):
    root, bid = officehome
    shutil.copy(root / "Art" / "Mug" / "all_021_0.png", root / "Art" / "Mug" / "stray.png")
    report = check_benchmark(bid, root, domains=["art"])
    assert [p.name for p in report.per_domain["art"]["extra"]] == ["stray.png"]
    assert any("in no list" in p for p in report.problems)
    assert _cli("data", "check", bid, "--root", str(root), "--domains", "art") == 1


def test_corrupt_image(tmp_path, capsys):
    root = make_fake_benchmark("office31", tmp_path, per_class=1, domains=["dslr"], corrupt=1)
    bid = _variant("office31", domains=["dslr"])
    report = check_benchmark(bid, root, domains=["dslr"])
    assert len(report.per_domain["dslr"]["unreadable"]) == 1
    assert any("cannot be decoded" in p for p in report.problems)
    assert _cli("data", "check", bid, "--root", str(root), "--domains", "dslr") == 1
    args = ("data", "check", bid, "--root", str(root), "--domains", "dslr", "--no-verify-images")
    assert _cli(*args) == 0


def test_wrong_count(tmp_path, capsys):
    root = make_fake_benchmark("office31", tmp_path, per_class=1, domains=["webcam"])
    report = check_benchmark("office31", root, domains=["webcam"])
    assert report.problems == [
        "webcam/all: found 31 images, expected 795 (image_list/webcam.txt (TLlib))."
    ]
    assert _cli("data", "check", "office31", "--root", str(root), "--domains", "w") == 1


def test_class_folder_mismatch(tmp_path):
    root = make_fake_benchmark("demo_digits", tmp_path, per_class=1)
    (root / "faded" / "3").rename(root / "faded" / "three")
    report = check_benchmark("demo_digits", root)
    mismatch = report.per_domain["faded"]["class_mismatch"]
    assert list(mismatch.values()) == [{"missing": ["3"], "unknown": ["three"]}]
    assert len(report.problems) == 2
    assert report.per_domain["inverted"]["counts"]["all"]["found"] == 10


def test_missing_domain_and_root(tmp_path, capsys):
    root = make_fake_benchmark("demo_digits", tmp_path, per_class=1, domains=["inverted"])
    report = check_benchmark("demo_digits", root)
    assert len(report.problems) == 1 and "faded" in report.problems[0]
    report = check_benchmark("demo_digits", tmp_path / "nowhere")
    assert report.problems == [f"Root folder {tmp_path / 'nowhere'} does not exist."]
    assert _cli("data", "check", "demo_digits", "--root", str(tmp_path / "nowhere")) == 1
    assert _cli("data", "check", "no_such_benchmark", "--root", str(tmp_path)) == 2
    assert "Unknown benchmark" in capsys.readouterr().err


def test_notes_do_not_fail(tmp_path):
    # PACS: the known broken sketch file is listed and unreadable, yet skipped by design.
    root = make_fake_benchmark("pacs", tmp_path, per_class=1, domains=["sketch"])
    broken = root / "images" / "sketch" / "dog" / "n02103406_4068-1.png"
    broken.write_bytes(b"broken")
    with open(root / "splits" / "sketch_train_kfold.txt", "a") as f:
        f.write("sketch/dog/n02103406_4068-1.png 1\n")
    counts = expected_fake_counts("pacs", 1, domains=["sketch"])
    counts = {k: v + (k[1] in ("all", "train")) for k, v in counts.items()}
    b = dataclasses.replace(get_benchmark("pacs"), id="_fake_pacs", expected_counts=counts)
    register_benchmark(b, overwrite=True)
    report = check_benchmark("_fake_pacs", root, domains=["sketch"])
    assert report.ok, report.problems
    assert any("known broken" in n for n in report.notes)


def _custom_tree(tmp_path):
    """A bring-your-own dataset with one of each problem: a folder domain with an empty class
    folder, an undecodable and a 16-bit image; a list domain with a missing file and a label
    out of range; and a third domain whose class folders differ."""
    import numpy as np
    from PIL import Image

    from fakes import make_fake_folder_domains

    make_fake_folder_domains(tmp_path, {"studio": ["mug", "pen", "stapler"], "odd": ["mug", "cup"]}, per_class=2)
    for f in (tmp_path / "studio" / "pen").iterdir():
        f.unlink()
    (tmp_path / "studio" / "mug" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / "studio" / "stapler" / "deep.png")
    phone = tmp_path / "phone"
    phone.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(tmp_path / "studio" / "mug" / "0.png", phone / name)
    (tmp_path / "phone.txt").write_text("a.png 0\nb.png 2\ngone.png 1\nc.png 7\n")
    return {
        "root": str(tmp_path),
        "domains": {"studio": "studio", "phone": {"list": "phone.txt", "images": "phone"}},
        "classnames": ["mug", "pen", "stapler"],
    }


def test_check_custom_reports_every_problem(tmp_path):
    from vlda.data.check_custom import check_custom

    spec = _custom_tree(tmp_path)
    report = check_custom(spec)
    studio, phone = report.per_domain["studio"], report.per_domain["phone"]
    assert studio["class_counts"] == {"mug": 3, "pen": 0, "stapler": 3}
    assert studio["counts"]["all"]["found"] == 6
    assert studio["empty"] == [tmp_path / "studio" / "pen"]
    assert [p.name for p in studio["unreadable"]] == ["broken.png"]
    assert [p.name for p in studio["high_bit_depth"]] == ["deep.png"]
    assert [p.name for p in phone["missing"]] == ["gone.png"]
    assert phone["class_counts"] == {"mug": 1, "pen": 0, "stapler": 1}
    text = "\n".join(report.problems)
    assert "class folder(s) hold no image" in text and "cannot be decoded" in text
    assert f"{tmp_path / 'phone.txt'}:4 (label 7 outside 0..2)" in text
    assert "phone: no images of class(es) pen" in text
    assert any("high-bit-depth" in n for n in report.notes)
    summary = report.summary()
    assert "per class: mug 3, pen 0, stapler 3" in summary and "Result: NOT OK" in summary

    spec["domains"]["odd"] = "odd"  # class lists that differ
    text = "\n".join(check_custom(spec, verify_images=False).problems)
    assert "odd: no images of class(es) pen, stapler" in text and "name no class" in text and "cup" in text


def test_check_custom_from_the_cli(tmp_path, capsys):
    import yaml

    from fakes import make_fake_folder_domains

    make_fake_folder_domains(tmp_path / "data", {"a": ["x", "y"], "b": ["x", "y"]}, per_class=2)
    spec = {"root": str(tmp_path / "data"), "domains": {"a": "a", "b": "b"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert _cli("data", "check", "--custom", str(tmp_path / "spec.yaml")) == 0
    out = capsys.readouterr().out
    assert "Result: OK (2 domain(s), 8 images)" in out and "per class: x 2, y 2" in out
    run = {"data": {"custom": spec, "source": ["a"], "target": "b"}, "model": {"backbone": "tiny", "name": "vit"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert _cli("data", "check", "--config", str(tmp_path / "run.yaml")) == 0
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    assert _cli("data", "check", "--config", str(tmp_path / "run.yaml"), f"data.custom.root={moved}") == 0
    assert f"at {moved}" in capsys.readouterr().out
    moved.rename(tmp_path / "data")
    for f in (tmp_path / "data" / "b" / "y").iterdir():
        f.unlink()
    assert _cli("data", "check", "--config", str(tmp_path / "run.yaml")) == 1
    assert "b: 1 class folder(s) hold no image" in capsys.readouterr().out
    assert _cli("data", "check", "--custom", str(tmp_path / "nope.yaml")) == 2
    assert _cli("data", "check") == 2
    assert "give one of" in capsys.readouterr().err


def test_check_a_benchmark_from_a_run_config(officehome, tmp_path, capsys):
    import yaml

    root, bid = officehome
    run = {"data": {"benchmark": bid, "root": None, "source": ["art"], "target": "clipart"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert _cli("data", "check", "-c", str(tmp_path / "run.yaml"), f"data.root={root}") == 0
    out = capsys.readouterr().out
    assert "art" in out and "clipart" in out and "product" not in out  # the config's domains only
    assert _cli("data", "check", "-c", str(tmp_path / "run.yaml")) == 2
    assert "gives no data.root" in capsys.readouterr().err
