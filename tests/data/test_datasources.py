import json

import pytest

from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.errors import OnnxoptError


def test_embedded_corpus_is_varied_and_large_enough():
    samples = embedded_samples(300)
    assert len(set(samples)) == 300
    words = sorted(len(s.split()) for s in samples)
    assert words[0] <= 3 and words[-1] >= 110  # from a few words to paragraphs past 128 tokens
    assert embedded_samples(40) == samples[:40]  # a fixed order: any N is reproducible


def test_embedded_corpus_too_small_for_request():
    with pytest.raises(OnnxoptError, match="--calib"):
        embedded_samples(100_000)


def test_text_file_skips_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first line\n\n   \nsecond ✓ unicode\n")
    assert load_samples(str(path), 10) == ["first line", "second ✓ unicode"]
    assert load_samples(str(path), 1) == ["first line"]


def test_csv_by_header_name_and_pairs_by_index(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text,other\n1,"hello, world",x\n2,second,y\n')
    assert load_samples(str(path), 10, "text") == ["hello, world", "second"]
    tsv = tmp_path / "p.tsv"
    tsv.write_text('a\t"quoted\tb\n')
    assert load_samples(str(tsv), 10, "0,1") == [("a", '"quoted')]


def test_csv_errors_name_the_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n1,hello\n")
    with pytest.raises(OnnxoptError, match="no column 'sentence'") as err:
        load_samples(str(path), 10, "sentence")
    assert "id, text" in err.value.hint
    with pytest.raises(OnnxoptError, match="which column"):
        load_samples(str(path), 10)
    with pytest.raises(OnnxoptError, match="one column or a pair"):
        load_samples(str(path), 10, "a,b,c")


def test_jsonl_default_key_and_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps("two") + "\n")
    assert load_samples(str(path), 10) == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(OnnxoptError, match="line 1 is not JSON"):
        load_samples(str(bad), 10)
    other = tmp_path / "o.jsonl"
    other.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(OnnxoptError, match="body"):
        load_samples(str(other), 10, "text")


def test_local_dataset_folder_saved_by_datasets(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"sentence": ["alpha", "beta", ""], "label": [0, 1, 0]}).save_to_disk(
        str(tmp_path / "ds")
    )
    assert load_samples(str(tmp_path / "ds"), 10) == ["alpha", "beta"]
    with pytest.raises(OnnxoptError, match="no column 'text'"):
        load_samples(str(tmp_path / "ds"), 10, "text")


def test_folder_of_data_files_through_load_dataset(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "train.csv").write_text("text\nfrom a folder\nsecond row\n")
    assert load_samples(str(folder), 10) == ["from a folder", "second row"]


def test_hub_name_failure_is_clean(monkeypatch):
    import datasets

    def offline(*_args, **_kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(OnnxoptError, match="cannot load dataset 'org/corpus'"):
        load_samples("org/corpus", 10)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(OnnxoptError, match="not UTF-8"):
        load_samples(str(path), 10)


def test_sentence_corpus_is_short_distinct_sentences():
    samples = embedded_samples(100_000, clip=True, corpus="sentences")
    assert len(samples) >= 900 and len(set(samples)) == len(samples)
    assert max(len(s.split()) for s in samples) <= 20  # what a sentence encoder is usually fed
    assert set(samples).isdisjoint(embedded_samples(100_000, clip=True))  # not the en corpus again


def test_unknown_embedded_corpus_is_named():
    with pytest.raises(OnnxoptError, match="corpus 'nope' is missing"):
        embedded_samples(1, corpus="nope")
