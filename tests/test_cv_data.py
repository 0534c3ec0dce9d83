"""The CV data set: the published digits file and the image-folder layout (no server)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from steps.base.errors import BadInput
from steps.cv import data as cvdata
from steps.records.lineage import DataRead


def parsed_digits():
    raw = cvdata.build_digits(seed=0)
    return raw, cvdata.parse(DataRead("file:///digits.npz", raw, hashlib.sha256(raw).hexdigest()))


def test_digits_split_is_fixed_and_complete():
    raw, images = parsed_digits()
    assert raw == cvdata.build_digits(seed=0)  # same seed, same bytes, same digest
    assert raw != cvdata.build_digits(seed=1)
    sizes = {split: len(images.labels[split]) for split in cvdata.SPLITS}
    assert sum(sizes.values()) == 1797
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0
    assert images.classes == [str(d) for d in range(10)]
    assert images.images["train"].dtype == np.uint8 and images.images["train"].shape[1:] == (8, 8)


def test_preprocess_gives_the_model_input():
    _, images = parsed_digits()
    x = cvdata.preprocess(images.images["test"][:5], 32)
    assert x.shape == (5, 3, 32, 32) and x.dtype == np.float32
    assert -1.0 <= x.min() < x.max() <= 1.0
    with pytest.raises(BadInput, match=r"\[N, H, W\]"):
        cvdata.preprocess(np.zeros((2, 64), dtype=np.uint8), 32)


def write_folder(root, images):
    from PIL import Image

    for split in cvdata.SPLITS:
        for index, (image, label) in enumerate(
            zip(images.images[split][:12], images.labels[split][:12], strict=True)
        ):
            folder = root / split / images.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index}.png")


def test_image_folder_layout_reads_like_the_npz(tmp_path):
    _, images = parsed_digits()
    write_folder(tmp_path / "set", images)
    read, folder = cvdata.read(str(tmp_path / "set"))
    assert read.uri == (tmp_path / "set").resolve().as_uri()
    assert sum(len(folder.labels[s]) for s in cvdata.SPLITS) == 36
    assert folder.images["train"].shape[1:] == (8, 8, 3)
    # labels follow the class folders, and the model input is built the same way
    assert set(folder.classes) <= set(images.classes)
    assert cvdata.preprocess(folder.images["val"], 16).shape[1:] == (3, 16, 16)
    # the digest covers the files: same tree, same digest; one changed image, another
    assert cvdata.read(str(tmp_path / "set"))[0].digest == read.digest
    first = sorted((tmp_path / "set" / "train").rglob("*.png"))[0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert cvdata.read(str(tmp_path / "set"))[0].digest != read.digest


def test_bad_folders_and_files_are_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="holds no images"):
        cvdata.read(str(tmp_path / "empty"))
    broken = tmp_path / "broken" / "train" / "a"
    broken.mkdir(parents=True)
    (broken / "x.png").write_bytes(b"not a png")
    with pytest.raises(BadInput, match="not a readable image"):
        cvdata.read(str(tmp_path / "broken"))
    missing_split = tmp_path / "npz-missing.npz"
    np.savez(missing_split, train_images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(BadInput, match="lacks the arrays"):
        cvdata.read(str(missing_split))
    with pytest.raises(BadInput, match="does not exist"):
        cvdata.read(str(tmp_path / "nothing.npz"))
