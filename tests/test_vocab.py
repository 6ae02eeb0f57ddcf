import numpy as np
import pytest

from explorer.inputs.vocab import (VocabError, cache_key, class_name_texts, concept_embeddings, load_vocab,
                            normalise_concepts)


def test_imagenet21k_is_about_21k_normalised_unique_concepts():
    vocab = load_vocab("imagenet21k")
    assert 20_000 <= len(vocab) <= 21_843
    assert len({c.casefold() for c in vocab}) == len(vocab)
    assert all(c == c.strip() and "_" not in c and "  " not in c for c in vocab)
    assert "organism" == vocab[0] and "crane" in vocab


def test_normalise_collapses_and_dedups_case_insensitively_keeping_the_first():
    got = normalise_concepts(["  Golden_retriever ", "golden  retriever", "", "Tulip", "TULIP", "rose\t bush"])
    assert got == ["Golden retriever", "Tulip", "rose bush"]


def test_file_vocab_dedups_and_skips_comments(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("# flowers\ntulip\n\nTulip\nsun_flower\n  rose  \n")
    assert load_vocab(f"file:{path}") == ["tulip", "sun flower", "rose"]


@pytest.mark.parametrize("spec", ["nope", "file:/no/such/file.txt", "sandbox"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(VocabError) as e:
        load_vocab(spec)
    assert "\n" not in str(e.value)


def test_wordnet_loads_or_says_how_to_get_it():
    try:
        vocab = load_vocab("wordnet")
    except VocabError as e:
        assert "nltk" in str(e)
    else:
        assert len(vocab) > 50_000


def test_embeddings_are_cached_per_list_and_model(tmp_path):
    calls = []

    def fake_embed(batch):
        calls.append(len(batch))
        return np.array([[len(t), 1.0, 0.0] for t in batch], dtype=np.float32)

    concepts = ["a", "bb", "ccc", "dddd", "eeeee"]
    first = concept_embeddings(concepts, "m1", tmp_path, batch_size=2, embed_fn=fake_embed)
    assert calls == [2, 2, 1]
    assert first.shape == (5, 3) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    again = concept_embeddings(concepts, "m1", tmp_path, batch_size=2, embed_fn=fake_embed)
    assert calls == [2, 2, 1]                          # read from the cache
    np.testing.assert_array_equal(first, again)
    concept_embeddings(concepts, "m2", tmp_path, batch_size=8, embed_fn=fake_embed)
    concept_embeddings(concepts[::-1], "m1", tmp_path, batch_size=8, embed_fn=fake_embed)
    assert calls == [2, 2, 1, 5, 5]                    # other model, other order: new entries
    assert cache_key(concepts, "m1") != cache_key(concepts[::-1], "m1")
    assert not list(tmp_path.glob("*.tmp"))


def test_real_text_model_embeds_a_small_vocabulary(tmp_path):
    emb = concept_embeddings(["tulip", "rose", "sports car"], "all-MiniLM-L6-v2", tmp_path,
                             progress=False)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]           # flowers closer to each other


def test_vocab_command_prints_size_and_sample(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    path = tmp_path / "v.txt"
    path.write_text("tulip\nrose\nTulip\ndaisy\n")
    result = CliRunner().invoke(app, ["vocab", "--vocab", f"file:{path}", "--sample", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(": 3 concepts") and len(lines) == 3
    bad = CliRunner().invoke(app, ["vocab", "--vocab", "nope"])
    assert bad.exit_code == 1


def test_class_names_are_read_as_words_and_junk_is_left_out():
    names = ["001.Black_footed_Albatross", "pink-primrose", "rose", "Rose", "12 angry men",
             "n01440764", "3", "", "  ", "a\x00b", "tab\tand\nnewline", "x" * 300, "Mr.Bean"]
    assert class_name_texts(names) == ["Black footed Albatross", "pink primrose", "rose",
                                       "12 angry men", "tab and newline", "x" * 100, "Mr Bean"]
    for text in class_name_texts([chr(c) * 3 for c in range(0, 0x250)]):   # every control char out
        assert text.isprintable() and 0 < len(text) <= 100
