"""The 3D suites read the mini world's sets in the real layouts (OpenShape/Uni3D's ModelNet40
test set, Princeton's ModelNet40 meshes, Objaverse-LVIS, Cap3D), and the published 64
prompt templates."""

import json

import pytest

from freebind.data.points import read_cloud
from freebind.evaluate.suites import load_suite
from freebind.evaluate.suites.tasks import SuiteError
from freebind.mini.world import CLASSES
from freebind.mini.writers import write_evalsets


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev3d")
    write_evalsets(root, seed=0, suites=["modelnet40", "objaverse-lvis", "cap3d"], items=20)
    return root


def test_modelnet40_openshape_layout(sets, tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    ev = load_suite("modelnet40", sets / "modelnet40")
    (task,) = ev.tasks
    assert task.modality == "point" and task.classnames[:3] == ["dog", "cat", "cow"]
    assert "car horn" in task.classnames and len(task.templates) == 64
    assert task.templates[0] == "a point cloud model of {c}."
    split = json.loads((sets / "modelnet40" / "test_split.json").read_text())
    assert [CLASSES[k] for k in task.labels] == [s["category"] for s in split]
    first = read_cloud(task.items[0])          # the materialised cloud, colours 0..1
    assert first.xyz.shape == (1024, 3) and 0 <= first.rgb.min() and first.rgb.max() <= 1
    again = load_suite("modelnet40", sets / "modelnet40")
    assert again.tasks[0].items == task.items     # cached, not rewritten


def test_modelnet40_princeton_meshes(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    for cls, mesh in (("flower_pot", trimesh.creation.cylinder(0.5, 1.0)),
                      ("airplane", trimesh.creation.box())):
        folder = tmp_path / "ModelNet40" / cls / "test"
        folder.mkdir(parents=True)
        (folder / f"{cls}_0001.off").write_text(mesh.export(file_type="off"))
        (tmp_path / "ModelNet40" / cls / "train").mkdir()
    (task,) = load_suite("modelnet40", tmp_path).tasks
    assert task.classnames == ["airplane", "flower pot"] and task.labels.tolist() == [0, 1]
    assert read_cloud(task.items[1]).xyz.shape[1] == 3


def test_objaverse_lvis_and_cap3d(sets):
    (task,) = load_suite("objaverse-lvis", sets / "objaverse-lvis").tasks
    assert task.classnames == [c.replace("_", " ") for c in CLASSES]
    lines = (sets / "objaverse-lvis" / "lvis_testset.txt").read_text().splitlines()
    assert [int(ln.split(",")[0]) for ln in lines] == task.labels.tolist()
    assert read_cloud(task.items[0]).rgb is not None
    ev = load_suite("cap3d", sets / "cap3d")
    kinds = [(t.item_modality, t.caption_modality) for t in ev.tasks]
    assert kinds == [("point", "text"), ("point", "image")]
    assert len(ev.tasks[0].items) == 20 and ev.tasks[0].describe()["directions"] == ["t2p",
                                                                                      "p2t"]


def test_bad_layouts_are_one_line_errors(tmp_path):
    with pytest.raises(SuiteError, match="not a ModelNet40 folder"):
        load_suite("modelnet40", tmp_path)
    (tmp_path / "lvis_testset.txt").write_text("x,y\n")
    with pytest.raises(SuiteError, match="expected cate_id,cate_name,model_id,point_path"):
        load_suite("objaverse-lvis", tmp_path)


def test_eval_suite_modelnet40_as_written_on_the_last_mini_build(tmp_path, monkeypatch):
    """``freebind eval --suite modelnet40`` with no target and no data: the last build, on
    the mini ModelNet40 set written once into the cache."""
    from typer.testing import CliRunner

    from freebind import spaces
    from freebind_cli.main import app

    if not spaces.info("mini:3d").check()[0]:
        pytest.skip("mini:3d weights not present")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["build", "mini:bind + c(mini:3d)", "--mini-pool-size", "100",
                            "--hyper", "epochs=1", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", "--suite", "modelnet40"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "the mini evaluation set" in r.output and "modelnet40" in r.output
    record = json.loads(next((tmp_path / "results").rglob("modelnet40.json")).read_text())
    assert record["protocol"]["missing"] == 0 and record["metrics"]["acc1"] > 0.2  # chance .05
