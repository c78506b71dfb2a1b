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
    with pytest.raises(ValueError, match=r"t\.txt:2: label 5 is outside 0\.\.1 \(2 classes\)"):
        load_custom_domains(spec)
    (tmp_path / "t.txt").write_text("a.jpg 0\n")
    with pytest.raises(ValueError, match=r"t: missing \['y'\]"):
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


def _two_domains(tmp_path, classes=("pen", "mug", "stapler")):
    make_fake_folder_domains(tmp_path, {"studio": list(classes), "phone": list(classes)}, per_class=1)
    return {"root": str(tmp_path), "domains": {"studio": "studio", "phone": "phone"}}


def test_prompt_names_as_a_mapping_follow_the_folders(tmp_path):
    spec = _two_domains(tmp_path)
    out = load_custom_domains({**spec, "prompt_names": {"mug": "coffee mug", "Stapler": "office stapler"}})
    # label order: sorted folders; each class gets its own prompt name, the rest their own name
    assert out["studio"].classnames == ("mug", "pen", "stapler")
    assert out["studio"].prompt_names == ("coffee mug", "pen", "office stapler")
    by_folder = {p.parent.name: out["studio"].prompt_names[y] for p, y in out["studio"].samples}
    assert by_folder == {"mug": "coffee mug", "pen": "pen", "stapler": "office stapler"}
    with pytest.raises(ValueError, match=r"key\(s\) \['cup'\] that name no class"):
        load_custom_domains({**spec, "prompt_names": {"cup": "coffee cup"}})
    with pytest.raises(ValueError, match="names class 'mug' twice"):
        load_custom_domains({**spec, "prompt_names": {"mug": "a", "Mug": "b"}})


def test_a_prompt_name_list_that_would_misname_classes_is_refused(tmp_path):
    spec = _two_domains(tmp_path)
    # Written in the order the user made the folders (pen, mug, stapler), not the label order.
    with pytest.raises(ValueError, match="entry 0 is 'pen', the name of class 'pen' \\(label 1\\)"):
        load_custom_domains({**spec, "prompt_names": ["pen", "mug", "stapler"]})
    # Other names in a list, with an order that only comes from sorting folders: not certain.
    with pytest.raises(ValueError, match="not certain; give prompt_names as a mapping"):
        load_custom_domains({**spec, "prompt_names": ["ballpoint pen", "coffee mug", "stapler"]})
    # The same list is accepted when `classnames` gives the order it follows.
    out = load_custom_domains({
        **spec, "classnames": ["pen", "mug", "stapler"], "prompt_names": ["ballpoint pen", "coffee mug", "stapler"],
    })
    named = {p.parent.name: out["phone"].prompt_names[y] for p, y in out["phone"].samples}
    assert named == {"pen": "ballpoint pen", "mug": "coffee mug", "stapler": "stapler"}
    # A list equal to the label order (loosely) is certain.
    ok = load_custom_domains({**spec, "prompt_names": ["Mug", "pen", "stapler"]})
    assert ok["studio"].prompt_names == ("Mug", "pen", "stapler")


def test_an_empty_class_folder_is_kept_with_a_warning(tmp_path, caplog):
    spec = _two_domains(tmp_path)
    for f in (tmp_path / "phone" / "pen").iterdir():
        f.unlink()
    with caplog.at_level("WARNING", logger="vlda.data"):
        out = load_custom_domains(spec)
    assert out["phone"].num_classes == 3 and out["phone"].class_counts() == [1, 0, 1]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and str(tmp_path / "phone" / "pen") in warned[0] and "3 classes" in warned[0]
