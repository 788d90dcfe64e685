"""WebDataset and parquet shards of an imagefolder, as large data sets come: a test's own data."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import datasets


def rows(folder: Path, split: str = "train") -> list[tuple[str, bytes, str]]:
    """(key, PNG bytes, caption) of each image of an imagefolder split, in order."""
    lines = (folder / split / "metadata.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [(Path(e["file_name"]).stem, (folder / split / e["file_name"]).read_bytes(), e["text"]) for e in entries]


def write_webdataset(folder: Path, out: Path, shards: int) -> list[Path]:
    """out/shard-0000K.tar, K < shards: the images in order, each as KEY.png and KEY.txt."""
    out.mkdir(parents=True, exist_ok=True)
    items, paths = rows(folder), []
    per_shard = -(-len(items) // shards)
    for index in range(shards):
        path = out / f"shard-{index:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for key, png, caption in items[index * per_shard:(index + 1) * per_shard]:
                for name, data in ((f"{key}.png", png), (f"{key}.txt", caption.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def write_parquet(folder: Path, out: Path, shards: int) -> list[Path]:
    """out/part-0000K.parquet, K < shards: columns image (PNG bytes) and text."""
    out.mkdir(parents=True, exist_ok=True)
    items = rows(folder)
    ds = datasets.Dataset.from_dict({"image": [{"bytes": png, "path": None} for _, png, _ in items],
                                     "text": [caption for _, _, caption in items]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "text": datasets.Value("string")}))
    paths = []
    for index in range(shards):
        path = out / f"part-{index:05d}.parquet"
        ds.shard(shards, index, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths
