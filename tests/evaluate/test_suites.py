"""Each suite loader on a small fixture in its real published layout, with real WAV/PNG files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from freebind.evaluate.suites import SuiteError, load_suite, names
from freebind.evaluate.suites.tasks import EvalSet


def wav(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 16000
    sf.write(path, (0.1 * np.sin(2 * np.pi * (200 + 50 * seed) * t)).astype(np.float32), 16000)
    return path


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (seed * 30 % 256, 80, 160)).save(path)
    return path


def write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)


def onehot_embeddings(es: EvalSet, key):
    """Embeddings that make every retrieval perfect: one axis per item, captions on their item's
    axis. ``key(modality, x)`` gives the axis of an input."""
    out = {}
    for m, items in es.inputs().items():
        axes = [key(m, x) for x in items]
        e = np.zeros((len(items), 64))
        e[np.arange(len(items)), axes] = 1.0
        out[m] = (items, e)
    return out


def retrieval_key(task):
    owner = {c: task.caption_item[i] for i, c in enumerate(task.captions)}
    items = {x: i for i, x in enumerate(task.items)}
    return lambda m, x: items[x] if m == task.item_modality else owner[x]


def test_every_suite_is_registered():
    assert set(names()) == {"audiocaps", "clotho", "esc50", "audioset", "vggss", "flickrnet",
                            "coco", "flickr30k", "imagenet", "pairs", "modelnet40",
                            "objaverse-lvis", "cap3d"}
    with pytest.raises(SuiteError, match="unknown suite"):
        load_suite("nope", ".")


# --- audiocaps ------------------------------------------------------------------------------

def make_audiocaps(root: Path):
    rows = []
    for clip, ytid in enumerate(["abcDEF12345", "xyz-_987654", "missing0000"]):
        for k in range(5):
            rows.append([100 + clip * 10 + k, ytid, 30 * clip, f"clip {clip} caption {k}"])
    write_csv(root / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    wav(root / "audio" / "test" / "abcDEF12345.wav", 0)   # named by youtube id
    wav(root / "audio" / "test" / "112.wav", 1)           # named by an audiocap id of clip 1
    return rows


def test_audiocaps_layout_names_and_missing(tmp_path):
    make_audiocaps(tmp_path)
    es = load_suite("audiocaps", tmp_path)
    (task,) = es.tasks
    assert [Path(p).name for p in task.items] == ["abcDEF12345.wav", "112.wav"]
    assert len(task.captions) == 10 and task.caption_item.tolist() == [0] * 5 + [1] * 5
    assert es.listed == 3 and es.missing == ["missing0000"]
    assert es.protocol()["missing"] == 1
    assert es.protocol()["tasks"][0]["directions"] == ["t2a", "a2t"]
    m = es.score(onehot_embeddings(es, retrieval_key(task)))
    assert m["t2a_R@1"] == 1.0 and m["a2t_R@1"] == 1.0 and m["a2t_mAP@10"] == 1.0


def test_audiocaps_accepts_Y_prefix_and_wrong_layout_errors(tmp_path):
    make_audiocaps(tmp_path)
    wav(tmp_path / "audio" / "test" / "Ymissing0000.flac", 2)
    es = load_suite("audiocaps", tmp_path)
    assert es.missing == [] and len(es.tasks[0].items) == 3
    with pytest.raises(SuiteError, match="test.csv"):
        load_suite("audiocaps", tmp_path / "audio")
    write_csv(tmp_path / "x" / "test.csv", ["youtube_id", "caption"], [["a", "b"]])
    with pytest.raises(SuiteError, match="missing column"):
        load_suite("audiocaps", tmp_path / "x")


def test_audiocaps_nothing_on_disk(tmp_path):
    write_csv(tmp_path / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
              [[1, "a", 0, "c"]])
    with pytest.raises(SuiteError, match="none of the 1 clips"):
        load_suite("audiocaps", tmp_path)


# --- clotho ---------------------------------------------------------------------------------

def test_clotho_layout(tmp_path):
    header = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    rows = [["rain, on roof.wav"] + [f"rain caption {i}, with comma" for i in range(5)],
            ["birds.wav"] + [f"birds caption {i}" for i in range(5)],
            ["gone.wav"] + [f"gone {i}" for i in range(5)]]
    write_csv(tmp_path / "clotho_captions_evaluation.csv", header, rows)
    wav(tmp_path / "evaluation" / "rain, on roof.wav", 0)
    wav(tmp_path / "evaluation" / "birds.wav", 1)
    es = load_suite("clotho", tmp_path)
    (task,) = es.tasks
    assert len(task.items) == 2 and len(task.captions) == 10
    assert task.captions[0] == "rain caption 0, with comma"
    assert es.missing == ["gone.wav"] and es.listed == 3
    m = es.score(onehot_embeddings(es, retrieval_key(task)))
    assert m["t2a_R@1"] == 1.0


# --- esc50 ------------------------------------------------------------------------------------

def make_esc50(root: Path):
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    rows = [["1-100-A-0.wav", 1, 0, "dog", True, 100, "A"],
            ["1-101-A-1.wav", 1, 1, "crying_baby", False, 101, "A"],
            ["2-102-A-2.wav", 2, 2, "door_wood_knock", False, 102, "A"],
            ["2-103-A-0.wav", 2, 0, "dog", True, 103, "A"],
            ["3-104-A-1.wav", 3, 1, "crying_baby", False, 104, "A"]]
    write_csv(root / "ESC-50-master" / "meta" / "esc50.csv", header, rows)
    for i, r in enumerate(rows[:4]):
        wav(root / "ESC-50-master" / "audio" / r[0], i)


def test_esc50_layout_prompts_and_score(tmp_path):
    make_esc50(tmp_path)
    es = load_suite("esc50", tmp_path)
    (task,) = es.tasks
    assert task.classnames == ["dog", "crying baby", "door wood knock"]
    assert task.labels.tolist() == [0, 1, 2, 0]
    assert es.missing == ["3-104-A-1.wav"]
    prompts = task.prompts()
    assert len(prompts) == 3 * len(task.templates) and "{c}" not in "".join(prompts)
    assert any("crying baby" in p for p in prompts)
    # audio on the axis of its class; prompts on their class axis -> acc1 = 1
    per_class = len(task.templates)
    key = (lambda m, x: task.labels[task.items.index(x)] if m == "audio"
           else prompts.index(x) // per_class)
    m = es.score(onehot_embeddings(es, key))
    assert m["acc1"] == 1.0 and "acc5" not in m      # 3 classes: no top-5
    # swap: every clip on the axis of the next class -> acc1 = 0
    key2 = (lambda m, x: (task.labels[task.items.index(x)] + 1) % 3 if m == "audio"
            else prompts.index(x) // per_class)
    assert es.score(onehot_embeddings(es, key2))["acc1"] == 0.0
    es2 = load_suite("esc50", tmp_path, folds="2")
    assert len(es2.tasks[0].items) == 2


def test_esc50_custom_templates(tmp_path):
    make_esc50(tmp_path)
    (tmp_path / "t.txt").write_text("a {} barks\n")
    es = load_suite("esc50", tmp_path, templates=str(tmp_path / "t.txt"))
    assert es.tasks[0].prompts()[1] == "a crying baby barks"
    (tmp_path / "bad.txt").write_text("no slot\n")
    with pytest.raises(SuiteError, match="needs"):
        load_suite("esc50", tmp_path, templates=str(tmp_path / "bad.txt"))


# --- audioset ---------------------------------------------------------------------------------

def test_audioset_layout_and_map(tmp_path):
    (tmp_path / "eval_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:25 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--4gqARaEJE, 0.000, 10.000, "/m/09x0r,/m/04rlf"\n'
        '-0RWZT-miFs, 420.000, 430.000, "/m/04rlf"\n'
        'zzzzzzzzzzz, 30.000, 40.000, "/m/0bt9lr"\n'
        'absentclip1, 30.000, 40.000, "/m/0bt9lr"\n')
    write_csv(tmp_path / "class_labels_indices.csv", ["index", "mid", "display_name"],
              [[0, "/m/09x0r", "Speech"], [1, "/m/04rlf", "Music"], [2, "/m/0bt9lr", "Dog"]])
    wav(tmp_path / "eval_segments" / "Y--4gqARaEJE.wav", 0)
    wav(tmp_path / "eval_segments" / "-0RWZT-miFs_420.wav", 1)
    wav(tmp_path / "eval_segments" / "zzzzzzzzzzz_30.000_40.000.wav", 2)
    es = load_suite("audioset", tmp_path)
    (task,) = es.tasks
    assert task.multilabel and task.labels.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert es.missing == ["absentclip1"] and es.listed == 4
    prompts = task.prompts()
    nt = len(task.templates)
    # clip i on axis i; class c on axis c: speech->clip0, music->clip1, dog->clip2
    key = lambda m, x: task.items.index(x) if m == "audio" else prompts.index(x) // nt
    m = es.score(onehot_embeddings(es, key))
    # Speech: clip0 positive, ranked first -> 1. Music: clip1 first (+), clip0 tied with
    # clip2 at 0 -> threshold {0,2} gives precision 2/3 at recall 1 -> AP=(0.5*1+0.5*2/3).
    assert m["mAP"] == pytest.approx((1 + (0.5 + 0.5 * 2 / 3) + 1) / 3)


# --- audio-image pairs ------------------------------------------------------------------------

def test_vggss_json_manifest(tmp_path):
    ids = ["---g-f_I2yQ_000001", "-0BKyt8iZ1I_000030", "gone_000000"]
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "vggss.json").write_text(json.dumps(
        [{"file": i, "class": "dog", "bbox": [[0, 0, 1, 1]]} for i in ids]))
    for k, i in enumerate(ids[:2]):
        wav(tmp_path / "audio" / f"{i}.wav", k)
        png(tmp_path / "frames" / f"{i}.png", k)
    png(tmp_path / "frames" / "gone_000000.png")       # image without audio: still missing
    es = load_suite("vggss", tmp_path)
    (task,) = es.tasks
    assert (task.item_modality, task.caption_modality) == ("audio", "image")
    assert len(task.items) == 2 and task.caption_item.tolist() == [0, 1]
    assert es.missing == ["gone_000000 (audio)"]
    m = es.score(onehot_embeddings(es, retrieval_key(task)))
    assert m["a2i_R@1"] == 1.0 and m["i2a_R@1"] == 1.0


def test_flickrnet_id_list_and_path_manifest(tmp_path):
    write_csv(tmp_path / "metadata" / "flickr_test.csv", None, [["1001"], ["1002"]])
    for k, i in enumerate(["1001", "1002"]):
        wav(tmp_path / "audio" / f"{i}.wav", k)
        png(tmp_path / "frames" / f"{i}.jpg".replace(".jpg", ".png"), k)
    es = load_suite("flickrnet", tmp_path)
    assert len(es.tasks[0].items) == 2 and es.missing == []
    write_csv(tmp_path / "m.csv", ["audio", "image"],
              [["audio/1001.wav", "frames/1001.png"], ["audio/none.wav", "frames/1002.png"]])
    es = load_suite("flickrnet", tmp_path, manifest="m.csv")
    assert len(es.tasks[0].items) == 1 and es.missing == ["none (audio)"]


# --- Karpathy splits --------------------------------------------------------------------------

def test_coco_karpathy_json(tmp_path):
    images = []
    for k in range(3):
        fn = f"COCO_val2014_{k:012d}.jpg"
        images.append({"filepath": "val2014", "filename": fn, "split": "test",
                       "sentences": [{"raw": f"image {k} caption {j}"} for j in range(6)]})
        if k < 2:
            # a real image file under the published name (JPEG content)
            (tmp_path / "val2014").mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(tmp_path / "val2014" / fn, "JPEG")
    images.append({"filepath": "train2014", "filename": "x.jpg", "split": "train",
                   "sentences": [{"raw": "train"}]})
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    es = load_suite("coco", tmp_path)
    (task,) = es.tasks
    assert len(task.items) == 2 and len(task.captions) == 10      # 6 captions cut to 5
    assert es.listed == 3 and es.missing == ["val2014/COCO_val2014_000000000002.jpg"]
    m = es.score(onehot_embeddings(es, retrieval_key(task)))
    assert m["t2i_R@1"] == 1.0 and m["i2t_R@5"] == 1.0


def test_flickr30k_karpathy_json(tmp_path):
    images = [{"filename": f"{1000 + k}.jpg", "split": "test",
               "sentences": [{"raw": f"f{k} {j}"} for j in range(5)]} for k in range(2)]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    for k in range(2):
        (tmp_path / "flickr30k-images").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "flickr30k-images" / f"{1000 + k}.jpg", "JPEG")
    es = load_suite("flickr30k", tmp_path)
    assert len(es.tasks[0].items) == 2 and es.missing == []
    with pytest.raises(SuiteError, match="no image in split"):
        load_suite("flickr30k", tmp_path, split="val")


# --- imagenet -----------------------------------------------------------------------------------

def test_imagenet_synset_folders_shipped_classes(tmp_path):
    png(tmp_path / "val" / "n01440764" / "ILSVRC2012_val_00000293.png", 0)
    png(tmp_path / "val" / "n01443537" / "ILSVRC2012_val_00000236.png", 1)
    png(tmp_path / "val" / "n15075141" / "ILSVRC2012_val_00000001.png", 2)
    es = load_suite("imagenet", tmp_path, templates="simple")
    (task,) = es.tasks
    assert len(task.classnames) == 1000 and task.classnames[:2] == ["tench", "goldfish"]
    assert task.labels.tolist() == [0, 1, 999] and task.classnames[999] == "toilet paper"
    assert len(task.templates) == 7
    assert len(load_suite("imagenet", tmp_path).tasks[0].templates) == 80
    png(tmp_path / "val" / "n99999999" / "x.png")
    with pytest.raises(SuiteError, match="n99999999"):
        load_suite("imagenet", tmp_path)


def test_imagenet_local_class_files(tmp_path):
    # the Kaggle/devkit mapping plus a names file, one name per line in class-index order
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n90000000 bell, tinkler\nn90000001 car horn\nn90000002 drum\n")
    png(tmp_path / "val" / "n90000001" / "a.png")
    png(tmp_path / "val" / "n90000002" / "b.png")
    es = load_suite("imagenet", tmp_path)
    assert es.tasks[0].classnames == ["bell", "car horn", "drum"]
    assert es.tasks[0].labels.tolist() == [1, 2]
    (tmp_path / "classnames.txt").write_text("church bell\ncar horn\nsnare drum\n")
    assert load_suite("imagenet", tmp_path).tasks[0].classnames[::2] == ["church bell",
                                                                      "snare drum"]
    (tmp_path / "classnames.txt").write_text("only one\n")
    with pytest.raises(SuiteError, match="1 names for 3 classes"):
        load_suite("imagenet", tmp_path)
    (tmp_path / "classnames.txt").unlink()
    (tmp_path / "c.tsv").write_text("n90000001\thorn\nn90000002\tdrum\n")
    es = load_suite("imagenet", tmp_path, classes="c.tsv")
    assert es.tasks[0].classnames == ["horn", "drum"] and es.tasks[0].labels.tolist() == [0, 1]


# --- pairs -------------------------------------------------------------------------------------

def test_pairs_manifest_three_columns(tmp_path):
    wav(tmp_path / "a" / "x.wav", 0)
    wav(tmp_path / "a" / "y.wav", 1)
    png(tmp_path / "i" / "x.png", 0)
    png(tmp_path / "i" / "y.png", 1)
    write_csv(tmp_path / "pairs.csv", ["audio", "image", "caption"],
              [["a/x.wav", "i/x.png", "a bell"], ["a/x.wav", "i/x.png", "a ringing bell"],
               ["a/y.wav", "i/y.png", "a drum"], ["a/z.wav", "i/y.png", "lost"]])
    es = load_suite("pairs", tmp_path)
    kinds = {(t.item_modality, t.caption_modality) for t in es.tasks}
    assert kinds == {("audio", "image"), ("audio", "text"), ("image", "text")}
    at = next(t for t in es.tasks if t.caption_modality == "text" and t.item_modality == "audio")
    assert len(at.items) == 2 and at.caption_item.tolist() == [0, 0, 1]
    assert es.missing == ["a/z.wav"]
    # a perfect embedding: axis = which of x/y a file or text belongs to
    key = lambda m, x: 0 if ("x." in str(x) or "bell" in str(x)) else 1
    m = es.score(onehot_embeddings(es, key))
    for name in ("t2a_R@1", "a2t_R@1", "t2i_R@1", "i2t_R@1", "a2i_R@1", "i2a_R@1"):
        assert m[name] == 1.0, name
    write_csv(tmp_path / "one.csv", ["text"], [["x"]])
    with pytest.raises(SuiteError, match="at least two"):
        load_suite("pairs", tmp_path, manifest="one.csv")


def test_drop_failed_items_are_reported(tmp_path):
    make_audiocaps(tmp_path)
    es = load_suite("audiocaps", tmp_path)
    first = es.tasks[0].items[0]
    es2 = es.drop_failed("audio", [first])
    assert len(es2.tasks[0].items) == 1 and len(es2.tasks[0].captions) == 5
    assert es2.tasks[0].caption_item.tolist() == [0] * 5
    assert f"{first} (unreadable)" in es2.missing and len(es2.missing) == 2


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(SuiteError, match="unknown option"):
        load_suite("clotho", tmp_path, folds="1")


def test_the_mini_world_evaluation_sets_load_unchanged(tmp_path):
    """`freebind mini evalsets` writes the real layouts: every loader reads them as they are."""
    from freebind.mini import CLASSES, write_evalsets

    index = write_evalsets(tmp_path, seed=0, items=len(CLASSES))
    assert set(index["suites"]) <= set(names())
    for name, spec in index["suites"].items():
        es = load_suite(name, tmp_path / spec["path"])
        assert es.missing == [], name
        main = es.tasks[0]
        assert len(main.items) == spec["items"], name
        if main.kind == "retrieval" and main.caption_modality == "text":
            per_item = 1 if name == "cap3d" else 5     # Cap3D: one caption per shape
            assert len(main.captions) == per_item * spec["items"], name


def test_scoring_reads_memory_mapped_rows_in_any_order(tmp_path):
    """EvalSet.score takes memory maps whose rows are in another order (or hold more items)
    than the task's: the rows are selected block by block, with the in-memory result."""
    from freebind.evaluate.metrics import paired_retrieval_metrics
    from freebind.evaluate.suites.tasks import ClassificationTask, RetrievalTask, RowSelection

    rng = np.random.default_rng(4)
    owner = np.repeat(np.arange(12), 3)
    items = [f"clip{i}" for i in range(12)]
    captions = [f"cap{i}" for i in range(36)]
    a = rng.standard_normal((12, 6)).astype(np.float32)
    t = a[owner] + rng.standard_normal((36, 6)).astype(np.float32)
    cls = ClassificationTask("audio", items, ["x", "y"], ["{c}", "a {c}"], np.arange(12) % 2)
    es = EvalSet("s", tmp_path, [RetrievalTask("audio", "text", items, captions, owner), cls])
    extra = rng.standard_normal((5, 6)).astype(np.float32)
    prompts = cls.prompts()
    text_rows = np.concatenate([t, rng.standard_normal((4, 6)).astype(np.float32), extra])
    text_items = captions + prompts + [f"other{i}" for i in range(5)]
    perm_t, perm_a = rng.permutation(len(text_items)), rng.permutation(12)

    def mapped(name, x):
        m = np.lib.format.open_memmap(tmp_path / f"{name}.npy", "w+", np.float32, x.shape)
        m[:] = x
        m.flush()
        return np.load(tmp_path / f"{name}.npy", mmap_mode="r")

    in_memory = es.score({"audio": (items, a), "text": (text_items, text_rows)})
    mm = es.score({"audio": ([items[i] for i in perm_a], mapped("a", a[perm_a])),
                   "text": ([text_items[i] for i in perm_t], mapped("t", text_rows[perm_t]))})
    assert mm == in_memory
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    want = paired_retrieval_metrics(unit(t) @ unit(a).T, owner, caption="text", item="audio")
    assert {k: v for k, v in mm.items() if "2" in k} == want
    sel = RowSelection(np.arange(20.0).reshape(10, 2), np.array([7, 2, 2]))
    assert sel.shape == (3, 2) and sel[1:].tolist() == [[4.0, 5.0], [4.0, 5.0]]
    assert sel[0].tolist() == [14.0, 15.0]
