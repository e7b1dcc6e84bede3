"""Reading image sets: CSV and JSONL manifests, folders with sidecar prompts, clear errors."""

from __future__ import annotations

import json

import pytest
from grefine_metrics.manifest import read_manifest
from PIL import Image

from grefine_core.errors import InputError


@pytest.fixture
def images(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "imgs" / name)
    return tmp_path


def test_csv_manifest_relative_to_its_folder(images):
    (images / "set.csv").write_text(
        'image,prompt,extra\nimgs/b.png,"a cat, red",x\nimgs/a.jpg,,y\n'
    )
    items = read_manifest(images / "set.csv")
    assert [i.key for i in items] == ["imgs/b.png", "imgs/a.jpg"]
    assert items[0].prompt == "a cat, red" and items[1].prompt == ""
    assert items[0].image == (images / "imgs" / "b.png").resolve()
    assert items[0].slug == "imgs__b"


def test_jsonl_manifest(images):
    lines = [
        json.dumps({"image": "imgs/a.jpg", "prompt": "dog"}),
        "",
        json.dumps({"image": str(images / "imgs" / "b.png")}),
    ]
    (images / "set.jsonl").write_text("\n".join(lines) + "\n")
    items = read_manifest(images / "set.jsonl")
    assert [(i.key, i.prompt) for i in items] == [("imgs/a.jpg", "dog"), ("imgs/b.png", "")]


def test_folder_with_sidecar_prompts(images):
    (images / "imgs" / "a.txt").write_text("  a red apple \n")
    (images / "imgs" / "notes.md").write_text("ignored")
    items = read_manifest(images / "imgs")
    assert [(i.key, i.prompt) for i in items] == [("a.jpg", "a red apple"), ("b.png", "")]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.csv",
            "img,text\nx.png,y\n",
            r"bad.csv:1: the CSV header must name the columns 'image' and 'prompt'",
        ),
        (
            "miss.csv",
            "image,prompt\nimgs/b.png,ok\nnope.png,x\n",
            r"miss.csv:3: image 'nope.png' does not exist",
        ),
        (
            "dup.csv",
            "image,prompt\nimgs/b.png,1\nimgs/b.png,2\n",
            r"dup.csv:3: image 'imgs/b.png' is listed twice \(first at .*dup.csv:2\)",
        ),
        ("empty.csv", "image,prompt\n", "lists no images"),
        ("blank.csv", "image,prompt\n ,x\n", r"blank.csv:2: the image path is empty"),
        ("dir.csv", "image,prompt\nimgs,x\n", r"dir.csv:2: image 'imgs' is a directory"),
        ("bad.jsonl", '{"image": "imgs/b.png"}\n{oops\n', r"bad.jsonl:2: not valid JSON"),
        ("list.jsonl", '["imgs/b.png"]\n', r"list.jsonl:1: expected a JSON object"),
        (
            "noimg.jsonl",
            '{"prompt": "x"}\n',
            r"noimg.jsonl:1: the key 'image' must be a string path",
        ),
        ("set.txt", "whatever", r"unknown format '.txt'; use .csv or .jsonl"),
    ],
)
def test_errors_name_the_file_and_line(images, name, text, message):
    (images / name).write_text(text)
    with pytest.raises(InputError, match=message):
        read_manifest(images / name)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "nothing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="contains no images"):
        read_manifest(tmp_path / "empty")
