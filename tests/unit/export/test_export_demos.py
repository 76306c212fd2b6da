"""Demo models: the digits CNN really learns, MiniLM matches sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfront.export.demos import digits, export_demo_models, minilm, two_input_model


def test_digits_factory_reaches_real_accuracy_when_trained():
    model = digits.factory()
    data = digits.load_data()
    acc = digits.accuracy(model, data.x_test, data.y_test)
    assert acc >= digits.MIN_ACCURACY
    assert model.rayfront_provenance["test_accuracy"] == pytest.approx(acc, abs=1e-4)
    assert len(data.y_test) == 360 and data.x_train.shape[1:] == (1, 8, 8)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0


def test_digits_outputs_logits_and_probabilities_when_called():
    logits, probs = digits.factory()(torch.zeros(3, 1, 8, 8))
    assert logits.shape == probs.shape == (3, 10)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_digits_heldout_samples_fit_one_request_when_default_count():
    pixels, labels = digits.heldout_samples()
    assert pixels.shape == (digits.MAX_BATCH_SIZE, 1, 8, 8) and pixels.dtype == np.float32
    assert labels.shape == (digits.MAX_BATCH_SIZE,) and set(labels) <= set(range(10))


def test_digits_write_samples_saves_held_out_pixels_and_labels(tmp_path):
    path = digits.write_samples(tmp_path / "samples.npz", count=8)
    with np.load(path) as samples:
        assert samples["pixels"].shape == (8, 1, 8, 8) and samples["pixels"].dtype == np.float32
        assert samples["labels"].shape == (8,)


def test_two_input_model_returns_mixed_dtype_outputs_when_called():
    out = two_input_model()(torch.ones(2, 4), torch.tensor([[0, 1, 2], [0, 0, 0]]))
    assert out["scores"].dtype == torch.float32 and out["scores"].shape == (2, 3)
    assert out["nonzero"].dtype == torch.int64 and out["nonzero"].tolist() == [[2], [0]]


def test_minilm_tokenize_returns_int64_ids_and_mask_when_given_texts():
    batch = minilm.tokenize(["hello world", "a somewhat longer sentence"])
    assert batch["input_ids"].dtype == np.int64 and batch["attention_mask"].dtype == np.int64
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"][0, 0] == minilm.CLS_ID
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # padded row
    with pytest.raises(TypeError, match="single str"):
        minilm.tokenize("not a list")


def test_minilm_parity_generators_make_valid_ids_and_masks():
    rng = np.random.default_rng(0)
    ids = minilm.RAYFRONT_INPUT_GENERATORS["input_ids"]("random", (4, 9), rng)
    mask = minilm.RAYFRONT_INPUT_GENERATORS["attention_mask"]("random", (4, 9), rng)
    assert ids.min() >= 0 and ids.max() < minilm.VOCAB_SIZE
    assert set(np.unique(mask)) <= {0, 1} and (mask[:, 0] == 1).all()


@pytest.mark.slow
def test_minilm_factory_matches_sentence_transformers_when_encoding_text():
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits on the mat.", "rayfront exports models", "short"]
    batch = minilm.tokenize(texts)
    with torch.no_grad():
        ours = minilm.factory()(
            torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])
        ).numpy()
    reference = SentenceTransformer(str(minilm.model_path()), device="cpu").encode(texts)
    assert ours.shape == (3, minilm.EMBEDDING_DIM)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_export_demo_models_skips_existing_models_when_not_forced(tmp_path):
    repo = tmp_path / "repo"
    (repo / "minilm" / "1").mkdir(parents=True)  # present: must be skipped, not re-exported
    written = export_demo_models(repo)
    assert written == [repo / "digits" / "1"]
    assert (repo / "digits" / "1" / digits.SAMPLES_FILE).is_file()
    assert sorted(p.name for p in (repo / "minilm").iterdir()) == ["1"]
    assert export_demo_models(repo) == []
