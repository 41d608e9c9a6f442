"""What --ship-images reads of an image at its source (pure)."""

from __future__ import annotations

from tasks.ship import Found, layer_count, parse_found

ID = "sha256:" + "c" * 64


LAYERS = f'["{ID}","{ID}"]'


def test_an_image_is_its_id_size_and_layers() -> None:
    found = parse_found(f"{ID} 25993216 {LAYERS}\n")
    assert found == Found(ID, 25993216, LAYERS)
    assert layer_count(found) == 2


def test_anything_else_is_no_image() -> None:
    assert parse_found("") is None
    assert parse_found("Error: No such image: registry:2.8.3") is None
    assert parse_found(f"{ID} <no value> {LAYERS}") is None
    assert parse_found(f"{ID} 25993216") is None
