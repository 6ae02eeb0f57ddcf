"""Per-concept refined queries: imagenet21k from timm's files, the descriptor file (hostile lines
too), the sandbox world's, and wordnet with and without nltk."""
import logging
import sys
import types

import pytest

from explorer.inputs.descriptors import MAX_CHARS, MAX_WORDS, concept_descriptors, gloss_phrase
from explorer.sandbox.search import SearchIndex
from explorer.sandbox.world import World
from explorer.inputs.vocab import VocabError, load_vocab


@pytest.fixture(scope="module")
def imagenet():
    return load_vocab("imagenet21k")


def assert_well_formed(got, vocab, limit):
    taken = {c.casefold() for c in vocab}
    assert set(got) <= set(vocab)
    for concept, texts in got.items():
        assert 1 <= len(texts) <= limit
        assert len({t.casefold() for t in texts}) == len(texts)
        for text in texts:
            assert text.casefold() not in taken, (concept, text)   # no other concept, nor itself
            assert text == " ".join(text.split()) and "_" not in text
            assert len(text) <= MAX_CHARS and len(text.split()) <= MAX_WORDS


def test_imagenet21k_gives_synonyms_then_a_gloss_phrase(imagenet):
    got = concept_descriptors("imagenet21k", imagenet)
    assert got["dog"] == ["domestic dog", "Canis familiaris", "dog genus Canis domesticated"]
    assert got["laptop"] == ["laptop computer", "laptop portable computer small"]
    assert got["rose"] == ["rosiness", "rose dusty pink color"]   # the colour synset took "rose"
    assert got["pizza"][0] == "pizza pie"
    # a synonym that names another concept is that concept's query, not this one's
    assert "creature" in imagenet and "creature" not in got["animal"]
    assert "beast" in got["animal"]


def test_the_limit_holds(imagenet):
    got = concept_descriptors("imagenet21k", imagenet, limit=2)
    assert got["pipal"] == ["pipal tree", "pipul"]
    assert_well_formed(got, imagenet, limit=2)


def test_the_whole_imagenet21k_vocabulary_is_well_formed(imagenet):
    got = concept_descriptors("imagenet21k", imagenet)
    assert len(got) > 20_000             # all but the concepts with no synonym and a bare gloss
    assert_well_formed(got, imagenet, limit=4)


def test_gloss_phrase_takes_the_first_content_words():
    assert gloss_phrase("rose", "any of many shrubs of the genus Rosa that bear roses") == "rose shrubs genus Rosa"
    assert gloss_phrase("cell", "(biology) the basic structural and functional unit; they may exist") == \
        "cell basic structural functional"
    assert gloss_phrase("department head", "the head of a department") == ""
    assert gloss_phrase("a b c d e f g", "alpha beta gamma") == "a b c d e f g alpha"   # within MAX_WORDS


def test_file_vocab_without_a_descriptor_file_has_none(tmp_path):
    vocab = tmp_path / "v.txt"
    vocab.write_text("rose\ntulip\n")
    assert concept_descriptors(f"file:{vocab}", ["rose", "tulip"]) == {}


def test_descriptor_file_skips_hostile_lines_and_counts_them(tmp_path, caplog):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\n".join([
        b"# concept<TAB>descriptor",
        b"",
        b"rose\twild",                      # -> "wild rose"
        b"Rose\tdamask rose",               # has the concept's words: as is
        b"rose\twild",                      # a repeat
        b"tulip\tred",                      # "red tulip" is another concept: dropped
        b"tulip\tparrot\r",                 # CRLF
        b"rose without a tab",
        b"rose\tbad\x1b[31m escape",
        b"rose\t\xe2\x80\xaeevil",          # a right-to-left override
        b"rose\t" + b"x" * 600,
        b"rose\t\xff\xfe",                  # not UTF-8
        b"rose\tone two three four five six seven eight",   # nine words with the concept
        b"\tno concept",
        b"orchid\twhite",                   # not in the vocabulary
    ]))
    vocab = ["rose", "tulip", "red tulip"]
    with caplog.at_level(logging.WARNING, logger="explorer.inputs.descriptors"):
        got = concept_descriptors(f"file:{tmp_path / 'v.txt'}", vocab, path=str(path))
    assert got == {"rose": ["wild rose", "damask rose"], "tulip": ["parrot tulip"]}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].args[1:] == (1, 7)   # (file, unknown, malformed)


def test_descriptor_file_lines_come_before_the_vocabulary_ones(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("dog\tcorgi\nlaptop\tgaming laptop\n", encoding="utf-8")
    got = concept_descriptors("imagenet21k", ["dog", "laptop"], path=str(path), limit=3)
    assert got == {"dog": ["corgi dog", "domestic dog", "Canis familiaris"],
                   "laptop": ["gaming laptop", "laptop computer", "laptop portable computer small"]}


@pytest.mark.parametrize("content", [None, b"", b"# only a comment\n", b"rose no tab\norchid\twhite\n"])
def test_a_descriptor_file_without_valid_lines_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "d.tsv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VocabError) as e:
        concept_descriptors("file:v.txt", ["rose"], path=str(path))
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "policy.concept_descriptors" in message


def test_sandbox_descriptors_add_the_family_adjectives_and_still_find_the_noun():
    world = World(0)
    assert world.descriptors("red rose") == ["wild red rose", "garden red rose", "dried red rose", "blooming red rose"]
    assert world.descriptors("wild rose") == ["garden wild rose", "dried wild rose", "blooming wild rose"]
    got = concept_descriptors("sandbox", world.concepts, world_descriptors=world.descriptors)
    assert set(got) == set(world.concepts)
    assert_well_formed(got, world.concepts, limit=4)
    index = SearchIndex(world)
    for concept in world.concepts[::7]:
        for text in got[concept]:
            best, _ = index.match(text)[0]
            assert world.concept(best).noun == world.concept(concept).noun, (concept, text)


def test_sandbox_needs_the_world():
    with pytest.raises(VocabError):
        concept_descriptors("sandbox", ["red rose"])


def test_an_unknown_vocabulary_is_an_error():
    with pytest.raises(VocabError):
        concept_descriptors("nope", ["rose"])


def test_wordnet_without_nltk_says_how_to_get_it(monkeypatch):
    # nltk is not a dependency; where it is installed anyway, hide it
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.corpus", None)
    with pytest.raises(VocabError) as e:
        concept_descriptors("wordnet", ["rose"])
    assert "\n" not in str(e.value) and "pip install nltk && python -m nltk.downloader wordnet" in str(e.value)


class FakeSynset:
    def __init__(self, names, definition="", hyponyms=()):
        self._names, self._definition, self._hyponyms = list(names), definition, list(hyponyms)

    def lemma_names(self):
        return self._names

    def hyponyms(self):
        return self._hyponyms

    def definition(self):
        return self._definition


def fake_nltk(monkeypatch, wordnet):
    nltk, corpus = types.ModuleType("nltk"), types.ModuleType("nltk.corpus")
    corpus.wordnet = wordnet
    nltk.corpus = corpus
    monkeypatch.setitem(sys.modules, "nltk", nltk)
    monkeypatch.setitem(sys.modules, "nltk.corpus", corpus)


def test_wordnet_without_its_data_says_how_to_get_it(monkeypatch):
    class NotDownloaded:   # nltk's lazy corpus loader, before `nltk.downloader wordnet`
        def __getattr__(self, name):
            raise LookupError("Resource wordnet not found.")

    fake_nltk(monkeypatch, NotDownloaded())
    with pytest.raises(VocabError) as e:
        concept_descriptors("wordnet", [])
    assert "nltk.downloader wordnet" in str(e.value)


def test_wordnet_gives_synonyms_hyponyms_and_the_gloss(monkeypatch):
    rose = FakeSynset(["rose", "rosebush"], "any of many shrubs of the genus Rosa that bear roses",
                      [FakeSynset(["damask_rose", "summer_damask_rose"]), FakeSynset(["multiflora"]),
                       FakeSynset(["banksia_rose"]), FakeSynset(["tea_rose"])])
    synsets = {"rose": [rose, FakeSynset(["rose", "rosiness"], "a dusty pink color")],
               "tulip": [FakeSynset(["tulip"], "any of numerous perennial bulbous herbs")]}
    calls = []

    def lookup(name, pos=None):
        calls.append((name, pos))
        return synsets.get(name, [])

    fake_nltk(monkeypatch, types.SimpleNamespace(synsets=lookup))
    vocab = ["rose", "tulip", "rosebush", "banksia rose", "summer damask rose"]
    got = concept_descriptors("wordnet", vocab, limit=5)
    assert got == {"rose": ["damask rose", "multiflora rose", "rose shrubs genus Rosa"],
                   "tulip": ["tulip numerous perennial bulbous"]}
    assert ("summer_damask_rose", "n") in calls and all(pos == "n" for _, pos in calls)
