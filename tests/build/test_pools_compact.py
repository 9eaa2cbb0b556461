"""Pools given as lists are held as compact arrays that give back the same items."""

from __future__ import annotations

import hashlib
from pathlib import Path

from freebind.build.pools import resolve_pools
from freebind.data.items import ItemList, KeyedItem, StringArray


def test_listed_pools_are_compact_and_equal(tmp_path):
    keyed = [KeyedItem(f"clip{i}", hashlib.sha256(b"%d" % i).hexdigest()) for i in range(5)]
    paths = [str(tmp_path / f"im{i}.png") for i in range(4)]
    texts = ["a dog", "ünï ☃", "a dog"]
    pools = resolve_pools(audio=keyed, image=paths, text=texts)
    assert isinstance(pools.items["audio"], ItemList) and pools.items["audio"].kind == "keyed"
    assert list(pools.items["audio"]) == keyed
    assert [it.content_key for it in pools.items["audio"]] == [k.content_key for k in keyed]
    assert isinstance(pools.items["image"], ItemList)
    assert list(pools.items["image"]) == [Path(p) for p in paths]
    assert isinstance(pools.items["text"], StringArray) and list(pools.items["text"]) == texts
    assert pools.counts() == {"audio": 5, "image": 4, "text": 3}
    assert pools.modalities() == ("audio", "image", "text")
    # a mix of keyed items and paths stays a list, as before
    mixed = resolve_pools(audio=[keyed[0], paths[0]]).items["audio"]
    assert mixed == [keyed[0], Path(paths[0])]
