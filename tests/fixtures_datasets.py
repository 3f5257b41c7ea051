"""Tiny fixtures in each dataset's real on-disk format, for tests/data/test_datasets.py.

Every writer takes the folder a config's ``data_dir`` (or ``packs_dir``) points at, writes a few
images, and returns what the loader should find. Each image is one flat grey level that encodes
its label (:func:`level`), so a test can check that images and labels stay paired after loading.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 8  # side of the fixture images wherever the format lets us choose


def level(label: int) -> int:
    """The grey level of every pixel of an image of class ``label``."""
    return 40 + 50 * label


def image(label: int, size: int = SIZE, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (size, size), (level(label),) * 3 if mode == "RGB" else level(label))


def save(img: Image.Image, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def save_jpg(label: int, path: Path, size: int = SIZE) -> None:
    save(image(label, size), path, quality=95)


# ---------------------------------------------------------------- folder trees
def write_image_folder(root: Path, classes: list[str], n_train: int, n_test: int, ext: str = "jpg",
                       splits: tuple[str, str] = ("train", "test"), mode: str = "RGB") -> None:
    """``root/{train,test}/<class>/<n>.<ext>`` (an ImageFolder tree: ImageNet, the CIFAR-10/MNIST packs)."""
    for split, n in zip(splits, (n_train, n_test)):
        for y, c in enumerate(classes):
            for k in range(n):
                save(image(y, mode=mode), root / split / c / f"{y}{k:04d}.{ext}")


def write_class_folders(root: Path, classes: list[str], n: int) -> None:
    """RESISC45 as distributed: ``root/<class>/<class>_NNN.jpg``."""
    for y, c in enumerate(classes):
        for k in range(1, n + 1):
            save_jpg(y, root / c / f"{c}_{k:03d}.jpg")


# ---------------------------------------------------------------- STL-10
def write_stl10(root: Path, n_train: list[int], n_test: list[int]) -> None:
    """``root/stl10_binary/{train,test}_{X,y}.bin``: uint8 images stored column-major (N, 3, 96, 96),
    labels 1..10, plus class_names.txt."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, counts in (("train", n_train), ("test", n_test)):
        labels = np.concatenate([np.full(n, y, dtype=np.uint8) for y, n in enumerate(counts)])
        x = np.empty((len(labels), 3, 96, 96), dtype=np.uint8)
        for i, y in enumerate(labels):
            x[i] = level(int(y))
        x.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (labels + 1).tofile(folder / f"{split}_y.bin")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")


# ---------------------------------------------------------------- GTSRB
GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def write_gtsrb_official(root: Path, n_train: list[int], test_labels: list[int]) -> None:
    """``root/GTSRB/Final_Training/Images/000NN/{GT-000NN.csv,*.ppm}`` and
    ``root/GTSRB/Final_Test/{GT-final_test.csv,Images/*.ppm}`` (ROI columns as in the real files)."""
    base = root / "GTSRB"
    for y, n in enumerate(n_train):
        folder = base / "Final_Training" / "Images" / f"{y:05d}"
        rows = []
        for k in range(n):
            name = f"{k // 3:05d}_{k:05d}.ppm"
            save(image(y), folder / name)
            rows.append(f"{name};{SIZE};{SIZE};1;1;{SIZE - 1};{SIZE - 1};{y}\n")
        (folder / f"GT-{y:05d}.csv").write_text(GT_HEADER + "".join(rows))
    rows = []
    for k, y in enumerate(test_labels):
        save(image(y), base / "Final_Test" / "Images" / f"{k:05d}.ppm")
        rows.append(f"{k:05d}.ppm;{SIZE};{SIZE};1;1;{SIZE - 1};{SIZE - 1};{y}\n")
    (base / "Final_Test" / "GT-final_test.csv").write_text(GT_HEADER + "".join(rows))
    # the unlabelled copy that ships with the test images: must not be mistaken for the labels
    (base / "Final_Test" / "Images" / "GT-final_test.test.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\n")


def write_gtsrb_torchvision(root: Path, n_train: list[int], test_labels: list[int]) -> None:
    """torchvision's download layout: ``root/gtsrb/GTSRB/Training/000NN/*.ppm``,
    ``root/gtsrb/GTSRB/Final_Test/Images/*.ppm`` and ``root/gtsrb/GT-final_test.csv``."""
    base = root / "gtsrb"
    for y, n in enumerate(n_train):
        for k in range(n):
            save(image(y), base / "GTSRB" / "Training" / f"{y:05d}" / f"00000_{k:05d}.ppm")
    rows = []
    for k, y in enumerate(test_labels):
        save(image(y), base / "GTSRB" / "Final_Test" / "Images" / f"{k:05d}.ppm")
        rows.append(f"{k:05d}.ppm;{SIZE};{SIZE};1;1;{SIZE - 1};{SIZE - 1};{y}\n")
    (base / "GT-final_test.csv").write_text(GT_HEADER + "".join(rows))


# ---------------------------------------------------------------- Flowers-102
def write_flowers102(root: Path, labels: list[int], trn: list[int], val: list[int], tst: list[int]) -> None:
    """``root/flowers-102/{jpg/image_NNNNN.jpg,imagelabels.mat,setid.mat}``; ids are 1-based,
    labels 1..102, arrays 1×N as in the originals."""
    from scipy.io import savemat

    base = root / "flowers-102"
    for i, y in enumerate(labels, 1):
        save_jpg(y, base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": np.array([[y + 1 for y in labels]], dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16)
                                 for k, v in (("trnid", trn), ("valid", val), ("tstid", tst))})


# ---------------------------------------------------------------- Stanford Cars
def write_stanford_cars(root: Path, class_names: list[str], train: list[int], test: list[int]) -> None:
    """``root/stanford_cars/``: ``devkit/cars_meta.mat`` (class_names cell), ``devkit/cars_train_annos.mat``
    and ``cars_test_annos_withlabels.mat`` (struct arrays bbox_x1..bbox_y2, class 1-based, fname),
    ``cars_train/*.jpg``, ``cars_test/*.jpg``."""
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([class_names], dtype=object)})
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    for labels, folder, mat in ((train, "cars_train", base / "devkit" / "cars_train_annos.mat"),
                                (test, "cars_test", base / "cars_test_annos_withlabels.mat")):
        annos = np.zeros((1, len(labels)), dtype=fields)
        for i, y in enumerate(labels):
            fname = f"{i + 1:05d}.jpg"
            save_jpg(y, base / folder / fname)
            annos[0, i] = (np.uint8(0), np.uint8(0), np.uint8(SIZE), np.uint8(SIZE), np.uint8(y + 1), fname)
        savemat(mat, {"annotations": annos})


# ---------------------------------------------------------------- FGVC-Aircraft
def write_fgvc_aircraft(root: Path, variants: list[str], splits: dict[str, list[int]]) -> None:
    """``root/fgvc-aircraft-2013b/data/{variants.txt,images_variant_<split>.txt,images/<id>.jpg}``;
    a list line is ``<7-digit id> <variant name, may hold spaces>``."""
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    next_id = 1000000
    for split, labels in splits.items():
        lines = []
        for y in labels:
            save_jpg(y, data / "images" / f"{next_id}.jpg")
            lines.append(f"{next_id} {variants[y]}\n")
            next_id += 1
        (data / f"images_variant_{split}.txt").write_text("".join(lines))


# ---------------------------------------------------------------- DTD
def write_dtd(root: Path, classes: list[str], splits: dict[str, list[int]], partition: int = 1) -> None:
    """``root/dtd/dtd/images/<class>/<class>_NNNN.jpg`` and ``labels/<split><partition>.txt``
    (lines ``<class>/<file>``)."""
    data = root / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    count = 0
    for split, labels in splits.items():
        lines = []
        for y in labels:
            count += 1
            name = f"{classes[y]}_{count:04d}.jpg"
            save_jpg(y, data / "images" / classes[y] / name)
            lines.append(f"{classes[y]}/{name}\n")
        (data / "labels" / f"{split}{partition}.txt").write_text("".join(lines))


# ---------------------------------------------------------------- SVHN
def write_svhn(root: Path, splits: dict[str, list[int]]) -> None:
    """``root/<split>_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) with 10 standing for digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, labels in splits.items():
        x = np.empty((32, 32, 3, len(labels)), dtype=np.uint8)
        for i, y in enumerate(labels):
            x[..., i] = level(y)
        ys = np.array([[10 if y == 0 else y] for y in labels], dtype=np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": ys})


# ---------------------------------------------------------------- CIFAR
def _cifar_batch(labels: list[int], key: str) -> dict:
    data = np.stack([np.full(3072, level(y), dtype=np.uint8) for y in labels])
    return {"batch_label": "fixture", key: list(labels), "data": data,
            "filenames": [f"{i}.png" for i in range(len(labels))]}


def _pickle(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, train_batches: list[list[int]], test: list[int]) -> None:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (pickled dicts)."""
    assert len(train_batches) == 5
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, labels in enumerate(train_batches, 1):
        _pickle(_cifar_batch(labels, "labels"), folder / f"data_batch_{i}")
    _pickle(_cifar_batch(test, "labels"), folder / "test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle({"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072}, folder / "batches.meta")


def write_cifar100(root: Path, train: list[int], test: list[int]) -> list[str]:
    """``root/cifar-100-python/{train,test,meta}``; entries keyed fine_labels/coarse_labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, labels in (("train", train), ("test", test)):
        batch = _cifar_batch(labels, "fine_labels")
        batch["coarse_labels"] = [y // 5 for y in labels]
        _pickle(batch, folder / name)
    fine = [f"fine{i:02d}" for i in range(100)]
    _pickle({"fine_label_names": fine, "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]}, folder / "meta")
    return fine


# ---------------------------------------------------------------- USPS
def write_usps(root: Path, train: list[int], test: list[int]) -> None:
    """``root/usps.bz2`` and ``root/usps.t.bz2``: LIBSVM lines ``<digit + 1> 1:v ... 256:v``, v in [-1, 1]."""
    root.mkdir(parents=True, exist_ok=True)
    for name, labels in (("usps.bz2", train), ("usps.t.bz2", test)):
        lines = []
        for y in labels:
            v = level(y) / 255 * 2 - 1
            lines.append(f"{y + 1} " + " ".join(f"{j}:{v:.4f}" for j in range(1, 257)) + "\n")
        with bz2.open(root / name, "wt") as f:
            f.write("".join(lines))


# ---------------------------------------------------------------- MNIST idx
def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def write_mnist_idx(root: Path, train: list[int], test: list[int]) -> None:
    """``root/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (the original gzipped idx files)."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, labels in (("train", train), ("t10k", test)):
        images = np.stack([np.full((28, 28), level(y), dtype=np.uint8) for y in labels])
        for kind, arr in (("images-idx3", images), ("labels-idx1", np.array(labels, dtype=np.uint8))):
            with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(_idx(arr))


# ---------------------------------------------------------------- Omniglot
def write_omniglot_zip(path: Path, set_name: str, alphabets: dict[str, int], n: int) -> list[str]:
    """``<set>.zip`` holding ``<set>/<alphabet>/characterNN/<id>_NN.png`` (1-bit PNGs); returns the
    class names ``alphabet/character`` in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{set_name}/", "")
        for alphabet, n_chars in sorted(alphabets.items()):
            for c in range(1, n_chars + 1):
                names.append(f"{alphabet}/character{c:02d}")
                for k in range(1, n + 1):
                    buf = io.BytesIO()
                    Image.new("1", (SIZE, SIZE), k % 2).save(buf, format="PNG")
                    zf.writestr(f"{set_name}/{alphabet}/character{c:02d}/{c:04d}_{k:02d}.png", buf.getvalue())
    return names


# ---------------------------------------------------------------- Visual Decathlon
def write_decathlon(root: Path, task: str, class_names: list[str], splits: dict[str, list[int]],
                    annotations: bool = True) -> None:
    """``root/data/<task>/<split>/<class folder>/<id>.jpg`` and, with ``annotations``, the devkit's
    COCO-style ``root/annotations/<task>_<split>.json`` (category ids ``10000 * t + k``, file names
    relative to ``root``), plus the label-less ``<task>_test_stripped.json``."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": 60001 + k, "name": n} for k, n in enumerate(class_names)]
    image_id = 7000000
    for split, labels in splits.items():
        images, anns = [], []
        for y in labels:
            image_id += 1
            rel = f"data/{task}/{split}/{y + 1:04d}/{image_id}.jpg"
            save_jpg(y, root / rel)
            images.append({"id": image_id, "file_name": rel, "width": SIZE, "height": SIZE})
            anns.append({"id": image_id, "image_id": image_id, "category_id": 60001 + y, "segmentation": [],
                         "area": SIZE * SIZE, "bbox": [0, 0, SIZE, SIZE], "iscrowd": 0})
        if annotations:
            doc = {"info": {}, "images": images, "annotations": anns, "categories": categories}
            # the real files list annotations in another order than images: must not matter
            doc["annotations"] = anns[::-1]
            (root / "annotations" / f"{task}_{split}.json").write_text(json.dumps(doc))
    if annotations:
        (root / "annotations" / f"{task}_test_stripped.json").write_text(
            json.dumps({"images": [], "categories": categories}))


# ---------------------------------------------------------------- PASCAL VOC
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
VOC_IGNORE = 255  # VOC's "void" label on object borders


def write_voc(root: Path, year: str, train: tuple[str, ...] = ("000005",)) -> Path:
    """Two 500x375 images in VOC's layout, ``root/VOCdevkit/VOC<year>/``: XML annotations (one
    object difficult), palette masks, ``ImageSets/{Main,Segmentation}/{trainval,train,val,test}.txt``
    (``train`` lists ``train``; val 000007; trainval and test both)."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    objects = {
        "000005": [("chair", 263, 211, 324, 339, 0), ("chair", 165, 264, 253, 372, 1)],
        "000007": [("car", 141, 50, 500, 330, 0), ("person", 10, 20, 60, 120, 0)],
    }
    for stem, objs in objects.items():
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{stem}.jpg")
        xml = "".join(
            f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{d}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object>" for n, x0, y0, x1, y1, d in objs)
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>VOC{year}</folder><filename>{stem}.jpg</filename><size><width>500</width>"
            f"<height>375</height><depth>3</depth></size><segmented>1</segmented>{xml}</annotation>")
        mask = np.zeros((375, 500), dtype=np.uint8)
        for n, x0, y0, x1, y1, _ in objs:
            mask[y0:y1, x0:x1] = VOC_CLASSES.index(n) + 1
            mask[y0, x0:x1] = VOC_IGNORE  # VOC marks object borders 255
        png = Image.fromarray(mask, mode="P")
        png.putpalette([v for c in range(256) for v in (c, 255 - c, (c * 7) % 256)])
        png.save(voc / "SegmentationClass" / f"{stem}.png")
    for split, stems in (("trainval", objects), ("train", list(train)), ("val", ["000007"]), ("test", objects)):
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


# ---------------------------------------------------------------- archives
def tar_folder(src: Path, archive: Path, arcname: str) -> None:
    """Pack ``src`` as ``arcname/`` into ``archive`` (compression from the suffix: .tar.gz / .tar.xz)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:xz" if archive.name.endswith(".xz") else "w:gz"
    with tarfile.open(archive, mode) as tf:
        tf.add(src, arcname=arcname)


# ---------------------------------------------------------------- every dataset of the paper presets
IMAGENET_WNIDS = ["n01440764", "n01443537"]  # the first two ImageNet classes: head indices 0 and 1


def write_imagenet_val_only(root: Path, n_per_class: int, wnids: list[str] = IMAGENET_WNIDS) -> None:
    """ImageNet as clusters keep it: ``root/val/<wnid>/ILSVRC2012_val_NNNNNNNN.JPEG`` and no train folder."""
    k = 0
    for y, wnid in enumerate(wnids):
        for _ in range(n_per_class):
            k += 1
            save_jpg(y, root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG")


def write_preset_data(data_dir: Path, n: int = 6) -> None:
    """Every dataset the full presets (``experiment=table1 … table12_13``) read, in its own on-disk
    format, where its ``conf/dataset`` YAML looks under ``paths.data_dir``: ImageNet val-only,
    the Table 2/3/4/8/10/12-13 datasets, Decathlon (ucf101 with annotations, daimlerpedcls as bare
    folders), the digit sets of Table 6 and PASCAL VOC 2007/2012. Two or three classes each, about
    ``n`` training images per class (enough for 2 batches of 2 and a non-empty validation split)."""
    two = [0, 1] * n
    write_imagenet_val_only(data_dir / "imagenet", n_per_class=n)
    write_stl10(data_dir / "stl10", n_train=[n, n], n_test=[2, 2])
    write_class_folders(data_dir / "NWPU-RESISC45", ["airplane", "beach"], n=n + 2)
    write_gtsrb_official(data_dir / "gtsrb", n_train=[n, n], test_labels=[0, 1, 1, 0])
    # Flowers-102's official splits: both classes in train, val and test
    labels = [0, 1] * (n + 4)
    ids = list(range(1, len(labels) + 1))
    write_flowers102(data_dir / "flowers102", labels, trn=ids[: 2 * n], val=ids[2 * n: 2 * n + 4],
                     tst=ids[2 * n + 4:])
    write_stanford_cars(data_dir / "stanford_cars", ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"],
                        train=two, test=[0, 1, 0, 1])
    write_fgvc_aircraft(data_dir / "fgvc_aircraft", ["707-320", "A300B4"],
                        {"train": two, "val": [0, 1, 0, 1], "test": [1, 0, 1, 0]})
    deca = data_dir / "decathlon-1.0"
    write_decathlon(deca, "ucf101", ["ApplyEyeMakeup", "ApplyLipstick"], {"train": two, "val": [0, 1, 1, 0]})
    write_decathlon(deca, "daimlerpedcls", ["neg", "pos"], {"train": two, "val": [1, 0, 0, 1]}, annotations=False)
    write_cifar10(data_dir / "cifar10", [[0, 1] * (n // 2 + 1)] * 5, test=[0, 1, 1, 0])
    write_cifar100(data_dir / "cifar100", train=two, test=[1, 0, 0, 1])
    digits = [0, 1, 2, 3, 4]  # 10 classes by name; labels 0-4 keep the grey levels (level) in range
    write_mnist_idx(data_dir / "mnist", train=digits * 2, test=digits)
    write_usps(data_dir / "usps", train=digits * 2, test=digits)
    write_svhn(data_dir / "svhn", {"train": digits * 2, "test": digits})
    write_voc(data_dir / "voc", "2007")
    write_voc(data_dir / "voc", "2012", train=("000005", "000007"))  # segmentation trains on batches of 2
