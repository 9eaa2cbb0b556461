"""The embeddings endpoint takes 3D shapes: ``{"type": "point", "data": BASE64, "format":
"ply"}``; its rows equal the space's own encoding of the file."""

import base64

import numpy as np
import pytest

from freebind import spaces
from freebind.mini.writers import write_pools
from freebind.util.errors import MediaError, UsageError


@pytest.mark.skipif(not spaces.info("mini:3d").check()[0], reason="mini:3d weights absent")
def test_point_inputs(tmp_path):
    from freebind.serve.embeddings_api import EmbeddingService, parse_item

    write_pools(tmp_path, n_audio=0, n_image=0, n_text=0, n_point=2, seed=8)
    files = sorted((tmp_path / "point").glob("*.ply"))
    b64 = [base64.b64encode(f.read_bytes()).decode() for f in files]
    items = [parse_item({"type": "point", "data": b64[0], "format": "ply"}, 0),
             parse_item("a striped bell", 1),
             parse_item({"type": "point", "data": b64[1]}, 2)]       # ply by default
    assert [i.modality for i in items] == ["point", "text", "point"]
    service = EmbeddingService("mini:3d", model="3d")
    got = service.encode(items)
    space = spaces.get("mini:3d")
    want_p = space.encode("point", files).numpy()
    np.testing.assert_allclose(got[[0, 2]], want_p, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got[1], space.encode("text", ["a striped bell"]).numpy()[0])
    with pytest.raises(UsageError, match="point format 'xyz' is not one of"):
        parse_item({"type": "point", "data": b64[0], "format": "xyz"}, 0)
    bad = parse_item({"type": "point", "data": base64.b64encode(b"ply\n").decode()}, 4)
    with pytest.raises(MediaError, match=r"input\[0\]: not a PLY file"):
        service.encode([bad])
