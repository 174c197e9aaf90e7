"""Attribute vocabularies: mined from training captions, or the dataset's labels (the demo's, CUB's)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

from timam.sources.attributes import (
    AttributeVocabulary,
    attribute_groups,
    caption_targets,
    caption_terms,
    fit_caption_vocabulary,
    fit_label_vocabulary,
    image_targets,
    label_targets,
    reid_raw_attributes,
)
from timam.sources.caption_table import BadInputError
from timam.sources.cub_attributes import read_cub_attributes
from timam.sources.cuhk_pedes import read_cuhk_pedes
from timam.sources.demo import generate_demo_dataset, sample_people


def _table(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(image_id, caption, split) rows as a caption table."""
    return pd.DataFrame(rows, columns=["image_id", "caption", "split"])


TABLE = _table(
    [
        ("a", "A man in a red coat.", "train"),
        ("a", "The man wears a red coat and red shoes.", "train"),
        ("b", "A woman with long hair and a red bag.", "train"),
        ("b", "This woman has long hair.", "train"),
        ("c", "A man in a blue coat.", "train"),
        ("z", "A zebra zebra zebra zebra zebra.", "test"),
        ("z", "Zebra stripes on a zebra.", "val"),
    ]
)


def test_caption_terms_are_content_words_and_adjacent_content_pairs() -> None:
    assert caption_terms("The man wears a red coat and long blue jeans.") == {
        "man",
        "red",
        "coat",
        "red coat",
        "long",
        "blue",
        "jeans",
        "long blue",
        "blue jeans",
    }
    assert caption_terms("A red coat.", pairs=False) == {"red", "coat"}


def test_caption_vocabulary_counts_training_captions_once_each_and_breaks_ties_alphabetically() -> None:
    vocabulary = fit_caption_vocabulary(TABLE, size=6, min_count=2)
    # By hand over the five training captions: man 3, coat 3, red 3, red coat 2, woman 2, hair 2,
    # long 2, long hair 2 ("red" twice in caption 2 counts once; "zebra" is only in val and test).
    assert vocabulary.terms == ("coat", "man", "red", "hair", "long", "long hair")
    assert vocabulary.counts == (3, 3, 3, 2, 2, 2)
    assert vocabulary.source == "captions"
    everything = fit_caption_vocabulary(TABLE, size=100, min_count=1)
    assert "zebra" not in everything.terms and "blue coat" in everything.terms
    assert fit_caption_vocabulary(TABLE.sample(frac=1.0, random_state=3), size=6, min_count=2) == vocabulary


def test_caption_and_image_targets_follow_the_vocabulary_columns() -> None:
    vocabulary = fit_caption_vocabulary(TABLE, size=6, min_count=2)  # coat man red hair long "long hair"
    train = TABLE[TABLE["split"] == "train"]
    expected_captions = torch.tensor(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [1, 1, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(caption_targets(vocabulary, list(train["caption"])), expected_captions)
    images = image_targets(vocabulary, ["c", "a", "b"], list(train["caption"]), list(train["image_id"]))
    assert torch.equal(images, torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1.0]]))
    with pytest.raises(ValueError, match="not in image_ids"):
        image_targets(vocabulary, ["a"], ["A red coat."], ["q"])


def test_a_vocabulary_round_trips_through_json_and_refuses_other_formats() -> None:
    vocabulary = fit_caption_vocabulary(TABLE, size=4, min_count=1)
    again = AttributeVocabulary.from_dict(json.loads(json.dumps(vocabulary.to_dict())))
    assert again == vocabulary and again.fitted_with["min_count"] == 1
    with pytest.raises(ValueError, match="format 0 is not 1"):
        AttributeVocabulary.from_dict({**vocabulary.to_dict(), "format": 0}, "attribute_vocabulary.json")
    with pytest.raises(ValueError, match="repeated"):
        AttributeVocabulary.from_dict({**vocabulary.to_dict(), "terms": ["a", "a", "b", "c"]})


def test_fits_refuse_missing_training_data_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="no training rows"):
        fit_caption_vocabulary(TABLE[TABLE["split"] != "train"], size=5)
    with pytest.raises(ValueError, match="min_count=9"):
        fit_caption_vocabulary(TABLE, size=5, min_count=9)
    with pytest.raises(ValueError, match="size must be at least 1"):
        fit_caption_vocabulary(TABLE, size=0)
    with pytest.raises(ValueError, match="have no attribute labels"):
        fit_label_vocabulary(TABLE, {"a": ["x"]})


def test_label_vocabulary_targets_and_groups() -> None:
    labels = {"a": ["hat=cap", "glasses=no"], "b": ["hat=none", "glasses=no"], "c": ["hat=cap", "glasses=yes"]}
    labels["z"] = ["hat=top"]  # a test image: never counted
    vocabulary = fit_label_vocabulary(TABLE, labels)
    assert vocabulary.terms == ("glasses=no", "hat=cap", "glasses=yes", "hat=none")
    assert vocabulary.counts == (2, 2, 1, 1)
    targets = label_targets(vocabulary, [labels["c"], labels["z"]])
    assert torch.equal(targets, torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0.0]]))
    assert attribute_groups(vocabulary) == {"glasses": [0, 2], "hat": [1, 3]}
    with pytest.raises(ValueError, match="label_targets"):
        caption_targets(vocabulary, ["a cap"])


def test_demo_writes_each_images_true_attributes_and_the_caption_table_is_unchanged(tmp_path: Path) -> None:
    path = generate_demo_dataset(tmp_path, num_identities=6, images_per_identity=2, split_identities=(3, 2, 1))
    records = json.loads(path.read_text())
    labels = reid_raw_attributes(records)
    assert set(labels) == {record["file_path"] for record in records}
    people = sample_people(random.Random("timam-demo/0"), 6)  # the generator's first draws
    for record in records:
        assert labels[record["file_path"]] == people[record["id"] - 1].attributes()
    for values in labels.values():  # one value per group: a categorical attribute
        groups = Counter(value.split("=")[0] for value in values)
        assert set(groups.values()) == {1} and {"gender", "hair_colour", "upper_colour", "glasses"} <= set(groups)
    # The CUHK-PEDES reader ignores the extra key: the same rows as without it.
    plain = [{key: value for key, value in record.items() if key != "attributes"} for record in records]
    assert read_cuhk_pedes(records, tmp_path / "imgs").equals(read_cuhk_pedes(plain, tmp_path / "imgs"))
    with pytest.raises(BadInputError, match="record 0 has no 'attributes'"):
        reid_raw_attributes(plain)


def _cub(root: Path, labels: str) -> Path:
    """A CUB_200_2011 folder in the archive's layout (attributes.txt beside the folder)."""
    cub = root / "CUB_200_2011"
    (cub / "attributes").mkdir(parents=True)
    (cub / "images.txt").write_text(
        "1 001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg\n"
        "2 001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg\n"
        "3 200.Common_Yellowthroat/Common_Yellowthroat_0003_190521.jpg\n"
    )
    (root / "attributes.txt").write_text(
        "1 has_bill_shape::curved_(up_or_down)\n2 has_bill_shape::dagger\n3 has_wing_color::blue\n"
    )
    (cub / "attributes" / "image_attribute_labels.txt").write_text(labels)
    return cub


LABELS = """1 1 0 3 4.0
1 2 1 4 3.5
1 3 1 1 2.2
2 1 1 2 9.12
2 2 0 4 1.0 0
2 3 1 3 2.0
3 1 0 1 0.0
3 2 0 1 0.0
3 3 0 2 6.0
"""


def test_cub_attribute_labels_are_read_per_image_with_a_certainty_floor(tmp_path: Path) -> None:
    cub = _cub(tmp_path, LABELS)
    assert read_cub_attributes(cub) == {
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111": [
            "has_bill_shape::dagger",
            "has_wing_color::blue",
        ],
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55": [
            "has_bill_shape::curved_(up_or_down)",
            "has_wing_color::blue",
        ],
        "200.Common_Yellowthroat/Common_Yellowthroat_0003_190521": [],
    }
    probable = read_cub_attributes(cub, min_certainty=3)
    assert probable["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111"] == ["has_bill_shape::dagger"]
    assert probable["001.Black_footed_Albatross/Black_Footed_Albatross_0002_55"] == ["has_wing_color::blue"]


def test_cub_attributes_txt_is_found_inside_the_folder_too(tmp_path: Path) -> None:
    cub = _cub(tmp_path, LABELS)
    (tmp_path / "attributes.txt").rename(cub / "attributes" / "attributes.txt")
    assert len(read_cub_attributes(cub)) == 3


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("1 1 1\n", "line 1 has 3 field"),
        ("1 1 1 4 0\n9 1 1 4 0\n", "line 2: image id 9 is not in images.txt"),
        ("1 7 1 4 0\n", "attribute id 7 is not in attributes.txt"),
        ("1 1 2 4 0\n", "is_present must be 0 or 1"),
        ("1 x 1 4 0\n", "'x' is not an integer id"),
    ],
)
def test_bad_cub_label_lines_name_the_file_and_line(tmp_path: Path, labels: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        read_cub_attributes(_cub(tmp_path, labels))


def test_missing_cub_attribute_names_say_where_they_were_looked_for(tmp_path: Path) -> None:
    cub = _cub(tmp_path, LABELS)
    (tmp_path / "attributes.txt").unlink()
    with pytest.raises(BadInputError, match="attributes.txt not found"):
        read_cub_attributes(cub)


def test_cub_labels_are_used_when_present_and_auto_falls_back_to_captions_when_not(tmp_path: Path) -> None:
    from timam.studies.attributes import AttributeVocabularyConfig, dataset_labels

    cub = _cub(tmp_path / "with", LABELS)
    assert dataset_labels(None, AttributeVocabularyConfig(cub_root=str(cub))) == read_cub_attributes(cub)
    missing = tmp_path / "text_c10_only" / "CUB_200_2011"  # the cub env's default, not downloaded
    assert dataset_labels(None, AttributeVocabularyConfig(cub_root=str(missing))) is None
    with pytest.raises(BadInputError, match="point cub_root at the CUB_200_2011 folder"):
        dataset_labels(None, AttributeVocabularyConfig(source="labels", cub_root=str(missing)))
