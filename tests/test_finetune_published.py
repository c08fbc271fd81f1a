"""bertcli finetune from a published Hugging Face BERT directory: the same ids and logits as transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from bertcli.finetune import Example, build_classifier, encode, load_model_for_finetune  # noqa: E402
from bertcli.finetune.data import collate  # noqa: E402
from test_published_bert import offline, published  # noqa: E402,F401  (fixtures: a random BERT with Google's vocab layout)


def test_a_published_bert_gives_transformers_ids_and_logits(published):  # noqa: F811
    spec = load_model_for_finetune(published)
    assert spec.kind == "published" and spec.tokenizer.cls_id == 101 and spec.has_pooler
    torch.manual_seed(0)
    ours, notes = build_classifier(spec, 3)
    assert any("pretraining heads dropped" in n for n in notes)
    theirs = transformers.BertForSequenceClassification.from_pretrained(published, num_labels=3).eval()
    theirs.classifier.load_state_dict(ours.classifier.state_dict())
    texts, pairs = ["I am a cat.", "As yet I have no name, naïve CAFÉ"], ["a pair", "and another one here"]
    hf = transformers.AutoTokenizer.from_pretrained(published)(texts, pairs, padding=True, return_tensors="pt")
    batch = collate(encode(spec.tokenizer, [Example(a, b, None) for a, b in zip(texts, pairs)], 64), np.arange(2),
                    spec.tokenizer.pad_id)
    assert torch.equal(batch.input_ids, hf["input_ids"]) and torch.equal(batch.token_type_ids, hf["token_type_ids"])
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(batch.input_ids, batch.token_type_ids, batch.attention_mask),
                                   theirs(**hf).logits, rtol=1e-5, atol=1e-5)
