"""Bring-your-own domains from a spec: folders, lists, class-list agreement."""

import pytest

from fakes import make_fake_folder_domains
from vlda.data.custom import load_custom_domains


def test_folder_domains_share_sorted_classes(tmp_path):
    make_fake_folder_domains(
        tmp_path, {"studio": ["pen", "mug", "stapler"], "phone": ["Mug", "pen", "stapler"]}
    )
    out = load_custom_domains(
        {"root": str(tmp_path), "domains": {"studio": "studio", "phone": "phone"}}
    )
    assert list(out) == ["studio", "phone"]
    studio, phone = out["studio"], out["phone"]
    assert studio.classnames == ("mug", "pen", "stapler") == phone.classnames
    assert len(studio) == len(phone) == 6
    # "Mug" in phone matches "mug" loosely and gets the same label.
    assert {p.parent.name: label for p, label in phone.samples}["Mug"] == 0
    assert studio.domain_prompt_name == "studio"


def test_folder_and_list_domains_with_given_classes(tmp_path):
    make_fake_folder_domains(tmp_path, {"studio": ["paper_clip", "mug"]}, per_class=1)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "phone.txt").write_text("a.jpg 1\nb.jpg 0\n")
    spec = {
        "root": str(tmp_path),
        "domains": {
            "studio": {"folder": "studio", "prompt_name": "studio photo"},
            "phone": {"list": "lists/phone.txt", "images": "phone"},
        },
        "classnames": ["mug", "paper_clip"],
        "domain_prompt_names": {"phone": "phone snapshot"},
    }
    out = load_custom_domains(spec)
    assert out["studio"].prompt_names == ("mug", "paper clip")
    assert out["studio"].domain_prompt_name == "studio photo"
    assert out["phone"].domain_prompt_name == "phone snapshot"
    assert [label for _, label in out["phone"].samples] == [1, 0]
    assert out["phone"].samples[0][0] == tmp_path / "phone" / "a.jpg"
    assert {p.parent.name: label for p, label in out["studio"].samples} == {
        "mug": 0,
        "paper_clip": 1,
    }


def test_class_lists_must_agree(tmp_path):
    make_fake_folder_domains(
        tmp_path,
        {"a": ["cat", "dog", "bird"], "b": ["cat", "dog"], "c": ["cat", "dog", "bird", "kitten"]},
        per_class=1,
    )
    spec = {"root": str(tmp_path), "domains": {"a": "a", "b": "b", "c": "c"}}
    with pytest.raises(ValueError) as err:
        load_custom_domains(spec)
    msg = str(err.value)
    assert "compared with domain 'a'" in msg
    assert "b: missing ['bird']" in msg
    assert "c: extra ['kitten']" in msg
    # A partial domain is accepted on request, an unknown folder never.
    spec["domains"] = {"a": "a", "b": "b"}
    out = load_custom_domains({**spec, "allow_missing_classes": True})
    assert out["b"].classnames == ("bird", "cat", "dog") and len(out["b"]) == 2
    assert {label for _, label in out["b"].samples} == {1, 2}


def test_list_labels_checked_against_classes(tmp_path):
    (tmp_path / "t.txt").write_text("a.jpg 0\nb.jpg 5\n")
    spec = {"root": str(tmp_path), "domains": {"t": {"list": "t.txt"}}, "classnames": ["x", "y"]}
    with pytest.raises(ValueError, match=r"t: missing \['y'\], extra \['label 5'\]"):
        load_custom_domains(spec)


def test_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="needs `domains`"):
        load_custom_domains({"root": str(tmp_path)})
    with pytest.raises(ValueError, match="Unknown key"):
        load_custom_domains({"root": str(tmp_path), "domians": {}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_custom_domains({"root": str(tmp_path), "domains": {"x": "nope"}})
    (tmp_path / "l.txt").write_text("a.jpg 0\n")
    with pytest.raises(ValueError, match="must give `classnames`"):
        load_custom_domains({"root": str(tmp_path), "domains": {"x": {"list": "l.txt"}}})
    with pytest.raises(ValueError, match="exactly one of"):
        load_custom_domains(
            {"root": str(tmp_path), "domains": {"x": {"list": "l.txt", "folder": "."}}}
        )
    make_fake_folder_domains(tmp_path, {"d": ["a", "b"]}, per_class=1)
    with pytest.raises(ValueError, match="prompt_names"):
        load_custom_domains(
            {"root": str(tmp_path), "domains": {"d": "d"}, "prompt_names": ["only one"]}
        )
