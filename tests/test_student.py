import pytest
import torch
from PIL import Image

from lga.config import StudentConfig
from lga.errors import ConfigError
from lga.student.model import class_prompts, class_text_features, load_student, resolve_dtype


@pytest.fixture(scope="module")
def student(tiny_clip_dir):
    return load_student(StudentConfig(spec=str(tiny_clip_dir), device="cpu"))


def test_loads_through_auto_classes(student, tiny_clip_dir):
    from transformers import CLIPModel

    assert isinstance(student.model, CLIPModel)
    assert student.dtype == torch.float32 and student.device.type == "cpu"
    assert student.spec == str(tiny_clip_dir)


def test_encodings_are_batched_and_normalised(student):
    images = [Image.new("RGB", (50 + 7 * i, 40), (20 * i, 100, 50)) for i in range(5)]
    a = student.encode_images(images, batch_size=2)
    b = student.encode_images(images, batch_size=5)
    assert a.shape == (5, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(5))
    t = student.encode_texts(["a photo of a landbird .", "a photo of a waterbird ."])
    assert t.shape == (2, 16)


def test_class_template_ensemble(student):
    templates = ["a photo of a {}.", "a picture of a {}."]
    assert class_prompts(["x", "y"], templates)[1] == ["a photo of a y.", "a picture of a y."]
    with torch.no_grad():
        ens = class_text_features(student, ["landbird", "waterbird"], templates)
        single = student.encode_texts(["a photo of a landbird.", "a picture of a landbird."])
    expected = torch.nn.functional.normalize(single.mean(0), dim=0)
    torch.testing.assert_close(ens[0], expected, atol=1e-5, rtol=1e-5)


def test_fingerprint_changes_with_weights(tiny_clip_dir, tmp_path):
    from lga.testing.tiny_clip import build_tiny_clip

    other = build_tiny_clip(tmp_path / "other", seed=1)
    a = load_student(StudentConfig(spec=str(tiny_clip_dir), device="cpu"))
    b = load_student(StudentConfig(spec=str(other), device="cpu"))
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == load_student(StudentConfig(spec=str(tiny_clip_dir))).fingerprint


def test_errors(tmp_path, tiny_clip_dir):
    with pytest.raises(ConfigError, match="student folder not found"):
        load_student(StudentConfig(spec=str(tmp_path / "nothing-here")))
    (tmp_path / "empty").mkdir()  # a folder without a checkpoint
    with pytest.raises(ConfigError, match="cannot be scored as saved: no config.json; no weights"):
        load_student(StudentConfig(spec=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="no CUDA"):
        if torch.cuda.is_available():
            pytest.skip("has CUDA")
        load_student(StudentConfig(spec=str(tiny_clip_dir), device="cuda"))


def test_dtype_resolution():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
