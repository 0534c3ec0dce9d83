"""The CV data set: a versioned file of images and labels with a fixed, seeded split.

File format (one ``.npz``, written by ``mlcp data cv``):

- ``{train,val,test}_images``: uint8, ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB), 0-255;
- ``{train,val,test}_labels``: int64, ``[N]``, class indices;
- ``classes``: the class names, in index order.

The default set is scikit-learn's handwritten digits (1,797 8x8 images, 10 classes; shipped
with scikit-learn, nothing is downloaded), split 70/15/15 with a fixed seed. The loaders also
read an image-folder layout (``ROOT/{train,val,test}/<class name>/*.png|jpg``), so a real set
such as Imagenette, unpacked in that layout, goes through the same code; the digest of a
folder is taken over its files' relative paths and bytes, in sorted order.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from ..lineage import DataRead
from ..stage import say

SPLITS = ("train", "val", "test")
DEFAULT_KEY = "cv/digits/v1/digits.npz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class ImageSet:
    images: dict  # split -> uint8 array [N, H, W] or [N, H, W, 3]
    labels: dict  # split -> int64 array [N]
    classes: list[str]

    def rows(self) -> int:
        return sum(len(v) for v in self.labels.values())


def build_digits(seed: int = 0) -> bytes:
    """scikit-learn's digits as the versioned .npz, split 70/15/15 with ``seed``."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_train, n_val = int(len(order) * 0.7), int(len(order) * 0.15)
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    arrays = {"classes": np.array([str(c) for c in digits.target_names])}
    for split, index in parts.items():
        arrays[f"{split}_images"] = images[index]
        arrays[f"{split}_labels"] = labels[index]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def parse(read: DataRead) -> ImageSet:
    """Check and unpack a data set read by :func:`read`; BadInput says what is wrong."""
    import numpy as np

    if read.uri.startswith("file://") and Path(read.uri[7:]).is_dir():
        return _parse_folder(Path(read.uri[7:]))
    try:
        npz = np.load(io.BytesIO(read.data), allow_pickle=False)
        arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:
        raise BadInput(f"{read.uri} is not a readable .npz data set: {exc}") from None
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if "classes" not in arrays:
        missing.append("classes")
    if missing:
        raise BadInput(f"{read.uri} lacks the arrays {', '.join(missing)} (see steps/cv/data.py)")
    classes = [str(c) for c in arrays["classes"]]
    images, labels = {}, {}
    for split in SPLITS:
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        check_images(x, f"{read.uri} {split}_images")
        if y.ndim != 1 or len(y) != len(x):
            raise BadInput(f"{read.uri} {split}_labels must be [N] with N={len(x)}, got {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise BadInput(f"{read.uri} {split}_labels has classes outside 0..{len(classes) - 1}")
        images[split], labels[split] = x, y.astype(np.int64)
    return ImageSet(images, labels, classes)


def check_images(x, what: str) -> None:
    ok = x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3))
    if not ok or len(x) == 0:
        raise BadInput(
            f"{what} must be a non-empty [N, H, W] or [N, H, W, 3] image array, got shape "
            f"{tuple(x.shape)}"
        )


def read_folder(root: Path) -> DataRead:
    """Digest an image-folder tree (relative paths and bytes of every image, sorted)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return DataRead(uri=root.resolve().as_uri(), data=b"", sha256=digest.hexdigest())


def _parse_folder(root: Path) -> ImageSet:
    import numpy as np
    from PIL import Image

    classes = sorted(
        {
            p.name
            for split in SPLITS
            if (root / split).is_dir()
            for p in (root / split).iterdir()
            if p.is_dir()
        }
    )
    if not classes:
        raise BadInput(f"{root} is not an image folder: expected {root}/train/<class>/*.png")
    images, labels = {}, {}
    size = None
    for split in SPLITS:
        xs, ys = [], []
        for index, name in enumerate(classes):
            for path in sorted((root / split / name).glob("*")):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    image = Image.open(path).convert("RGB")
                except Exception as exc:
                    raise BadInput(f"{path} is not a readable image: {exc}") from None
                size = size or image.size
                xs.append(np.asarray(image.resize(size), dtype=np.uint8))
                ys.append(index)
        if not xs:
            raise BadInput(f"{root}/{split} holds no images")
        images[split], labels[split] = np.stack(xs), np.array(ys, dtype=np.int64)
    return ImageSet(images, labels, classes)


def read(uri: str) -> tuple[DataRead, ImageSet]:
    """Read and check a data set from ``s3://``, a local ``.npz`` or a local image folder."""
    from .. import lineage

    local = Path(uri[7:] if uri.startswith("file://") else uri)
    if not uri.startswith("s3://") and local.is_dir():
        data = read_folder(local)
    else:
        data = lineage.read(uri)
    return data, parse(data)


COLUMNS = {"image": "binary", "label": "long"}


def log(read: DataRead, images: ImageSet, context: str) -> str:
    """Record the image set as an input of the active run (``context``: training,
    validation, evaluation); returns its digest."""
    from .. import lineage

    return lineage.log(
        read, name="images", num_rows=images.rows(), columns=COLUMNS, context=context
    )


def preprocess(images, image_size: int):
    """uint8 images -> float32 ``[N, 3, S, S]`` in [-1, 1], the model's (and Triton's) input."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    check_images(images, "images")
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    x = x.unsqueeze(1).repeat(1, 3, 1, 1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return ((x - 0.5) / 0.5).numpy().astype(np.float32)


def publish(uri: str | None = None, seed: int = 0) -> str:
    """Build the digits set and write it to ``uri`` (default: under ``$MLCP_DATA_ROOT``)."""
    import os

    from .. import lineage

    if uri is None:
        root = os.environ.get("MLCP_DATA_ROOT")
        if not root:
            raise BadInput("no --out given and MLCP_DATA_ROOT is not set (run `mlcp stack up`)")
        uri = f"{root.rstrip('/')}/{DEFAULT_KEY}"
    written = lineage.write(uri, build_digits(seed))
    say("data")(f"wrote {written}")
    return written


def default_uri() -> str:
    import os

    root = os.environ.get("MLCP_DATA_ROOT", "")
    return f"{root.rstrip('/')}/{DEFAULT_KEY}" if root else ""
