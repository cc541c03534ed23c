"""The run folder reader shows examples as people read them."""

from autointerp.sample import REPLACEMENT, TokenDecoder


def test_split_characters_are_shown_whole(tokenizer):
    text = "Nguyễn met 🙂 in Đà Nẵng."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    one_by_one = [tokenizer.decode([i]) for i in ids]
    assert any(REPLACEMENT in t for t in one_by_one)  # the problem exists for this tokenizer
    decoder = TokenDecoder(tokenizer)
    pieces = decoder.pieces(ids)
    assert len(pieces) == len(ids) and "".join(pieces) == text
    assert not any(REPLACEMENT in p for p in pieces)
    plain = [
        tokenizer.decode([i])
        for i in tokenizer("plain words", add_special_tokens=False)["input_ids"]
    ]
    assert decoder.pieces(tokenizer("plain words", add_special_tokens=False)["input_ids"]) == plain
