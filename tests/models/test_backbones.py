import pytest
import torch

from vlda.models.backbone import EOT_TOKEN, SOT_TOKEN, clip_tokenize
from vlda.models.loading import (
    BackboneSpec,
    WeightsNotFoundError,
    load_backbone,
    load_open_clip_dir,
)

TEXTS = ["a photo of a dog.", "an extremely long and oddly specific photo of a small cat"]


def test_real_clip_tokenizer_offline():
    tokens = clip_tokenize(["a photo of a dog"])
    assert tokens[0, :7].tolist() == [SOT_TOKEN, 320, 1125, 539, 320, 1929, EOT_TOKEN]


def test_too_long_text_is_an_error():
    with pytest.raises(ValueError, match="longer than"):
        clip_tokenize(["word " * 100])


@pytest.mark.parametrize("variant", ["vit", "resnet", "hf"])
def test_encode_text_matches_the_model_and_the_eot_cut_is_exact(variant):
    b = load_backbone(f"tiny:{variant}")
    tokens = b.tokenize(TEXTS)
    ours = b.encode_text(tokens)  # cut after the last EOT
    if variant == "hf":
        out = b.model.get_text_features(input_ids=tokens)
        ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    else:
        ref = b.model.encode_text(tokens)  # open_clip's own full 77-token pass
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    full = b.encode_text_embeddings(b.embed_tokens(tokens), tokens.argmax(-1))
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["vit", "resnet", "hf"])
def test_image_features_and_interface(variant):
    b = load_backbone(f"tiny:{variant}")
    feats = b.encode_image(torch.randn(3, 3, b.image_size, b.image_size))
    assert feats.shape == (3, b.embed_dim)
    assert b.context_length == 77 and b.logit_scale > 0
    assert not any(p.requires_grad for p in b.parameters())
    assert b.fingerprint != load_backbone("tiny:vit" if variant != "vit" else "tiny:resnet").fingerprint


@pytest.mark.parametrize("variant", ["vit", "resnet", "hf"])
def test_image_tower_holds_exactly_what_encode_image_uses(variant):
    b = load_backbone(f"tiny:{variant}").requires_grad_(True)
    b.encode_image(torch.randn(2, 3, b.image_size, b.image_size)).square().sum().backward()
    used = {id(p) for p in b.parameters() if p.grad is not None}
    tower = {id(p) for p in b.image_tower().parameters()}
    assert used == tower and tower < {id(p) for p in b.parameters()}  # and no text parameter


def test_tiny_models_are_deterministic():
    a, b = load_backbone("tiny:vit"), load_backbone("tiny:vit")
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_spec_parsing():
    s = BackboneSpec.parse("open_clip:ViT-B-16@openai")
    assert (s.kind, s.name, s.pretrained) == ("open_clip", "ViT-B-16", "openai")
    assert BackboneSpec.parse("hf:openai/clip-vit-base-patch16").pretrained is None
    with pytest.raises(ValueError, match="KIND:NAME"):
        BackboneSpec.parse("ViT-B-16")


def test_missing_local_weights_is_one_clear_sentence(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_backbone(f"open_clip:RN50@{tmp_path / 'nope' / 'RN50.pt'}")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_backbone(f"open_clip:{tmp_path / 'no-such-dir'}/")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_backbone("open_clip:ViT-Q-99@openai")


def test_local_open_clip_directory_round_trip(tmp_path, tiny_vit):
    import json

    cfg = {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save(tiny_vit.model.state_dict(), tmp_path / "weights.pt")
    b = load_open_clip_dir(tmp_path)
    assert b.mean == (0.5, 0.5, 0.5) and b.image_size == 32
    tokens = b.tokenize(TEXTS)
    torch.testing.assert_close(b.encode_text(tokens), tiny_vit.encode_text(tokens))
    assert load_backbone(f"open_clip:{tmp_path}").image_size == 32


def test_directory_without_weights_names_what_is_missing(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(WeightsNotFoundError, match="weights.pt"):
        load_open_clip_dir(tmp_path)
