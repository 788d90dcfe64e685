"""Stage 1b: training a tiny CLIP on shapes, its exports, and the scoring helpers."""

import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import CLIPTokenizer, VisionTextDualEncoderModel

from ldm.components.clip import clip_image_features, clip_text_features, load_clip
from ldm.components.text_encoder import encode_prompts, load_text_encoder
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.core.images import to_tensor
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.metrics.clip_accuracy import retrieval_top1, zero_shot_attributes
from ldm.stages.clip.config import Config, VisionTowerConfig
from ldm.stages.clip.losses import WordSwapper, contrastive_loss
from ldm.stages.clip.train import train

SIZE = 16


def tiny_config(data: str, run_dir: str, **train_overrides) -> Config:
    tower = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return build(Config, {
        "stage": "clip", "run_dir": run_dir,
        "data": {"source": data, "resolution": SIZE, "batch_size": 16, "val_fraction": 0.25},
        "model": {"vision": {**tower, "patch_size": 8}, "text": tower, "projection_dim": 16},
        "tokenizer": {"vocab_size": 600, "max_length": 24},
        "validation": {"zero_shot_split": "test", "zero_shot_images": 16},
        "hard_negatives": {"words": [["circle", "square", "triangle"], ["top left", "center"]]},
        "train": {"max_steps": 3, "val_every_n_steps": 3, "checkpoint_every_n_steps": 3,
                  "log_every_n_steps": 1, "lr": 1e-3, **train_overrides},
    })


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return str(make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=64, size=SIZE, seed=0, n_test=16))


@pytest.fixture(scope="module")
def trained_run(shapes, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(tiny_config(shapes, str(run)))
    return run


def test_training_logs_retrieval_and_zero_shot(trained_run):
    metrics = pd.read_csv(trained_run / "clip_training" / "csv" / "metrics.csv")
    assert (metrics["train/loss"].dropna() > 0).all()
    for name in ("val/image_to_text_top1", "val/text_to_image_top1",
                 "val/zero_shot_colour", "val/zero_shot_shape", "val/zero_shot_position"):
        values = metrics[name].dropna()
        assert len(values) > 0 and values.between(0, 1).all(), name  # shares, not percentages
    assert (trained_run / "clip_training" / "checkpoints" / "last.ckpt").is_file()


def test_export_loads_as_text_encoder_and_clip(trained_run):
    for folder in ("text_encoder", "tokenizer", "clip"):
        assert not list((trained_run / folder).glob("*.bin")), "weights must be safetensors"
    tokenizer, text_encoder = load_text_encoder(trained_run)
    embeddings = encode_prompts(tokenizer, text_encoder, ["a red circle", "", "a zorblax"])
    assert embeddings.shape == (3, 24, 32)

    clip, processor = load_clip(trained_run / "clip")
    # The exported text encoder is the CLIP's own text tower, weight for weight.
    ids = tokenizer(["a red circle"], return_tensors="pt")["input_ids"]
    assert torch.allclose(text_encoder(input_ids=ids).last_hidden_state,
                          clip.text_model(input_ids=ids).last_hidden_state)
    assert clip_text_features(clip, processor.tokenizer, ["a red circle"]).shape == (1, 16)


def test_clip_image_features_match_the_processor(trained_run):
    """[-1, 1] tensors and PIL images through RUN/clip's processor give the same features."""
    clip, processor = load_clip(trained_run / "clip")
    image = Image.new("RGB", (SIZE, SIZE), (200, 30, 30))
    image.paste((10, 10, 200), (4, 4, 12, 12))
    from_processor = clip.get_image_features(
        pixel_values=processor(images=image, return_tensors="pt")["pixel_values"]).pooler_output
    from_tensor = clip_image_features(clip, to_tensor(image)[None], processor)
    assert torch.allclose(from_tensor, torch.nn.functional.normalize(from_processor, dim=-1), atol=1e-5)
    bigger = clip_image_features(clip, torch.zeros(2, 3, 2 * SIZE, 2 * SIZE))  # resized to fit
    assert bigger.shape == (2, 16) and torch.allclose(bigger.norm(dim=-1), torch.ones(2))


def test_resume_reuses_the_tokenizer(trained_run, shapes):
    before = CLIPTokenizer.from_pretrained(trained_run / "tokenizer")
    train(tiny_config(shapes, str(trained_run), max_steps=5, ckpt_path="last"))
    after = CLIPTokenizer.from_pretrained(trained_run / "tokenizer")
    assert after.get_vocab() == before.get_vocab()
    assert after("a red circle")["input_ids"] == before("a red circle")["input_ids"]
    metrics = pd.read_csv(trained_run / "clip_training" / "csv" / "metrics.csv")
    assert metrics["step"].max() >= 4


def test_mistakes_are_caught_before_training(shapes, tmp_path):
    cfg = tiny_config(shapes, str(tmp_path))
    cfg.model.vision.patch_size = 5
    with pytest.raises(LdmError, match="patch_size"):
        train(cfg)
    cfg = tiny_config(shapes, str(tmp_path))
    cfg.validation.zero_shot_split = "train"
    with pytest.raises(LdmError, match="zero_shot_split"):
        train(cfg)
    with pytest.raises(LdmError, match="num_heads"):
        build(Config, {"stage": "clip", "run_dir": "x", "data": {"source": shapes},
                       "model": {"text": {"hidden_size": 30, "num_heads": 4}}})


def test_resnet_image_tower_trains_exports_and_reloads(shapes, tmp_path):
    cfg = tiny_config(shapes, str(tmp_path))
    cfg.model.vision = build(VisionTowerConfig, {"kind": "resnet", "embedding_size": 8,
                                                 "hidden_sizes": [8, 16], "depths": [1, 1]})
    trained = train(cfg).module.clip
    assert isinstance(trained, VisionTextDualEncoderModel)
    clip, processor = load_clip(tmp_path / "clip")
    assert isinstance(clip, VisionTextDualEncoderModel) and clip.config.vision_config.image_size == SIZE
    pixels = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    assert torch.allclose(clip_image_features(clip, pixels, processor),
                          clip_image_features(trained.eval(), pixels, processor), atol=1e-5)
    # The text encoder the diffusion stage reads is this CLIP's text tower, weight for weight.
    tokenizer, text_encoder = load_text_encoder(tmp_path)
    ids = tokenizer(["a red circle"], return_tensors="pt")["input_ids"]
    assert torch.allclose(text_encoder(input_ids=ids).last_hidden_state,
                          clip.text_model(input_ids=ids).last_hidden_state)


def test_vision_tower_kind_and_stages_are_checked():
    with pytest.raises(LdmError, match="kind='cnn' is not one of vit, resnet"):
        build(VisionTowerConfig, {"kind": "cnn"})
    with pytest.raises(LdmError, match="same number of stages"):
        build(VisionTowerConfig, {"kind": "resnet", "hidden_sizes": [8, 16], "depths": [1]})


def test_retrieval_and_zero_shot_scores():
    eye = torch.eye(3)
    assert retrieval_top1(eye, eye) == (1.0, 1.0)
    assert retrieval_top1(eye, eye[[1, 0, 2]]) == pytest.approx((1 / 3, 1 / 3))
    # Prompts for colour x shape; image 0 matches "red square", image 1 "blue circle".
    attributes = {"colour": ["red", "blue"], "shape": ["circle", "square"]}
    text = torch.eye(4)  # red circle, red square, blue circle, blue square
    images = text[[1, 2]]
    labels = {"colour": ["red", "blue"], "shape": ["square", "square"]}
    assert zero_shot_attributes(images, text, attributes, labels) == {"colour": 1.0, "shape": 0.5}


def test_word_swapper_makes_one_negative_per_group_mentioned():
    swapper = WordSwapper([["circle", "square", "triangle"], ["top left", "top right", "center"]])
    negatives = swapper.negatives(["A red Circle in the top left", "a blue square", "a coloured blob"])
    assert len(negatives) == 3  # two groups in the first caption, one in the second, none in the third
    shape_swap, position_swap, other = negatives
    assert shape_swap.startswith("A red ") and shape_swap.endswith(" in the top left")
    assert shape_swap.split()[2] in ("square", "triangle")
    assert position_swap.startswith("A red Circle in the ") and not position_swap.endswith("top left")
    assert other in ("a blue circle", "a blue triangle")
    assert swapper.negatives(["a sacred squareish thing"]) == []  # whole words only
    with pytest.raises(LdmError, match=r"hard_negatives.words\[0\]"):
        WordSwapper([["circle", "Circle"]])


def test_hard_negatives_raise_the_loss_of_a_model_blind_to_the_swapped_word():
    images = torch.eye(4)[:3]
    captions = torch.eye(4)[:3]  # each image matches its own caption
    plain = images @ captions.T * 10
    # A model that ignores the swapped word embeds each negative exactly like the caption...
    blind = torch.cat([plain, images @ captions.T * 10], dim=1)
    # ...one that sees it embeds the negative elsewhere.
    seeing = torch.cat([plain, images @ torch.eye(4)[[3, 3, 3]].T * 10], dim=1)
    assert contrastive_loss(blind) > contrastive_loss(seeing) > contrastive_loss(plain)
    assert contrastive_loss(blind) - contrastive_loss(plain) > 0.3  # about log(2) / 2


def test_loss_without_negatives_is_clip_models_own(trained_run):
    clip, processor = load_clip(trained_run / "clip")
    captions = ["a red circle", "a blue square in the center", "a green triangle"]
    # Captions that mention no listed word get no negatives: the logits stay square.
    assert WordSwapper([["purple", "orange"]]).negatives(captions) == []
    tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
    out = clip(**tokens, pixel_values=torch.randn(3, 3, SIZE, SIZE), return_loss=True)
    assert torch.allclose(contrastive_loss(out.logits_per_image), out.loss)
