"""The CV data set: a versioned file of images and labels with a fixed, seeded split.

File format (one ``.npz``, written by ``mlcp data cv``):

- ``{train,val,test}_images``: uint8, ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB), 0-255;
- ``{train,val,test}_labels``: int64, ``[N]``, class indices;
- ``classes``: the class names, in index order.

The default set is scikit-learn's handwritten digits (1,797 8x8 images, 10 classes; shipped
with scikit-learn, nothing is downloaded), split 70/15/15 with a fixed seed. ``mlcp data cv``
publishes it as a version of the data set ``cv/digits`` (steps/records/datasets.py):
``<root>/cv/digits/<variant>-seed<seed>/digits.npz``, then points ``newest`` at it. The build
is deterministic (the same variant and seed give the same bytes). Another seed is a new split
of the same distribution; a variant (:data:`VARIANTS`) is the world moved: a changed class
balance, noisier or inverted images. The loaders also
read an image-folder layout (``ROOT/{train,val,test}/<class name>/*.png|jpg``), so a real set
such as Imagenette, unpacked in that layout, goes through the same code; the digest of a
folder is taken over its files' relative paths and bytes, in sorted order.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from ..base.environment import MLCP_DATA_ROOT
from ..base.errors import BadInput
from ..records import datasets
from ..records.lineage import DataRead
from ..stages.stage import say

SPLITS = ("train", "val", "test")
DATASET = "cv/digits"  # the versioned data set under the data root
FILE = "digits.npz"
DEFAULT_KEY = f"{DATASET}/{datasets.version_name(datasets.BASE_VARIANT, 0)}/{FILE}"
# The variants ``mlcp data cv --variant`` publishes (for demos and tests of drift): what each
# changes, applied to every image of the set before it is split.
VARIANTS = {
    datasets.BASE_VARIANT: "the digits as they are",
    "imbalanced": "a changed class balance: classes 0-4 keep one image in five",
    "noisy": "noisier images: Gaussian noise (sd 48 of 255) on every pixel",
    "inverted": "inverted images (255 - x)",
    "shifted": "imbalanced and noisy together",
}
NOISE_SD = 48.0
KEEP_SHARE = 0.2  # of classes 0-4 in the imbalanced variants
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class ImageSet:
    images: dict  # split -> uint8 array [N, H, W] or [N, H, W, 3]
    labels: dict  # split -> int64 array [N]
    classes: list[str]

    def rows(self) -> int:
        return sum(len(v) for v in self.labels.values())


def shift(images, labels, variant: str, seed: int):
    """The images and labels of ``variant`` (:data:`VARIANTS`), drawn with ``seed``."""
    import numpy as np

    if variant not in VARIANTS:
        raise BadInput(f"unknown CV data variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    rng = np.random.default_rng([seed, 1])  # apart from the split's draws
    if variant in ("imbalanced", "shifted"):
        keep = (labels >= 5) | (rng.random(len(labels)) < KEEP_SHARE)
        images, labels = images[keep], labels[keep]
    if variant in ("noisy", "shifted"):
        noise = rng.normal(0.0, NOISE_SD, images.shape)
        images = np.clip(images.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    if variant == "inverted":
        images = 255 - images
    return images, labels


def npz_bytes(arrays: dict) -> bytes:
    """``np.savez_compressed``, but the same arrays always give the same bytes (no time
    stamps in the zip), so that a data set's digest names its content."""
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def build_digits(seed: int = 0, variant: str = datasets.BASE_VARIANT) -> bytes:
    """scikit-learn's digits (or a :data:`VARIANTS` of them) as the versioned .npz, split
    70/15/15 with ``seed``."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    images, labels = shift(images, labels, variant, seed)
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
    return npz_bytes(arrays)


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
    from ..records import lineage

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
    from ..records import lineage

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


def publish(uri: str | None = None, seed: int = 0, variant: str = datasets.BASE_VARIANT) -> dict:
    """Build the digits set (``variant``, split with ``seed``) and publish it as a version of
    ``cv/digits`` under ``$MLCP_DATA_ROOT``, then make it the newest; or, with ``uri``, write
    it there and nothing else (a file of its own, not a version of the set)."""
    from ..records import lineage

    data = build_digits(seed, variant)
    if uri is not None:
        written = lineage.write(uri, data)
        say("data")(f"wrote {written}")
        return {"uri": written, "variant": variant, "seed": seed}
    version = datasets.version_name(variant, seed)
    pointer = datasets.publish(
        datasets.data_root(), DATASET, version, FILE, data, variant=variant, seed=seed
    )
    say("data")(f"wrote {pointer['uri']} ({VARIANTS[variant]}); newest: {version}")
    return {key: pointer[key] for key in ("uri", "version", "digest", "newest")}


def default_uri() -> str:
    root = MLCP_DATA_ROOT.raw
    return f"{root.rstrip('/')}/{DEFAULT_KEY}" if root else ""
