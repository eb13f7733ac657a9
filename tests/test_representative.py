from pathlib import Path

import pytest
import torch

import flowcore
from flowcore import FlowOptions, FlowPatcher
from flowcore.detection.representative import RepresentativeClassifier, read_labels, token_examples

LABELS = Path(flowcore.__file__).parent / "data" / "representative_labels.jsonl"


@pytest.fixture(scope="module")
def split(minilm_encoder):
    records = read_labels(LABELS)
    prompts = list(dict.fromkeys(r.prompt for r in records))
    held_out = set(prompts[30:])
    train = token_examples(minilm_encoder, [r for r in records if r.prompt not in held_out])
    test = token_examples(minilm_encoder, [r for r in records if r.prompt in held_out])
    return train, test


def test_knn_finds_representative_tokens_on_held_out_prompts(split):
    (x_train, y_train), (x_test, y_test) = split
    metrics = RepresentativeClassifier(k=5).fit(x_train, y_train).evaluate(x_test, y_test)
    # Measured on MiniLM with our head-word labels: precision 0.83, recall 0.62 on 49 held-out tokens.
    # Half the held-out tokens are representative (0.49), so a constant guess has precision 0.49.
    assert metrics["precision"] >= 0.7 and metrics["examples"] >= 40


def test_save_and_load_round_trip_without_pickle(split, tmp_path):
    (x_train, y_train), (x_test, _) = split
    classifier = RepresentativeClassifier(k=3).fit(x_train, y_train)
    classifier.save(tmp_path / "knn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["knn.json", "knn.safetensors"]
    loaded = RepresentativeClassifier.load(tmp_path / "knn")
    assert loaded.k == 3 and torch.equal(loaded.predict(x_test), classifier.predict(x_test))


def test_bad_label_lines_name_the_line(tmp_path):
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"prompt": "a zebra", "item": "zebra", "representative": ["zebra"]}\n{"prompt": "a cat"}\n')
    with pytest.raises(ValueError, match="labels.jsonl:2"):
        read_labels(bad)


def test_patcher_uses_the_classifier_for_redundant_token_removal(split, minilm_encoder, nlp):
    (x_train, y_train), _ = split
    classifier = RepresentativeClassifier(k=5).fit(x_train, y_train)
    patcher = FlowPatcher(
        minilm_encoder, FlowOptions(detect=False, remove_redundant=True), nlp=nlp, classifier=classifier
    )
    result = patcher.run("a wooden rowing boat on a calm lake")
    for entry in result.report.items:
        assert entry.representative_rows and set(entry.representative_rows) <= set(entry.rows)
        assert sorted(entry.removed_rows + entry.representative_rows) == entry.rows
        for row in entry.removed_rows:
            assert torch.equal(result.patched[row], patcher.baseline().rows[row % 77])
