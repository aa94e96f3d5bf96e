"""WER/CER as the field computes them: jiwer after Whisper's normalisers, raw figures beside
them, Korean CER without spaces; the English rules are OpenAI's (none of the normaliser
package's own additions)."""

import pytest

from toolkit.bench.metrics import (
    char_error_rate,
    corpus_cer,
    corpus_wer,
    normalize,
    normalizer_name,
    scores,
    word_errors,
)


def test_spelled_numbers_and_spellings_are_not_errors():
    # LJ Speech spells numbers out; Whisper writes digits: the old rule counted 3 errors here
    ref = "printed in fourteen sixty-five, the colour of the page"
    hyp = "Printed in 1465. The color of the page."
    got = scores([hyp], [ref], "en")
    assert got["wer"] == 0.0 and got["cer"] == 0.0
    assert got["normalizer"] == "whisper-english"
    # raw: case, punctuation and the spelling all count
    assert got["wer_raw"] == pytest.approx(100 * 6 / 9)
    assert got["cer_raw"] > 20


def test_contractions_titles_and_fillers():
    assert normalize("Um, I won't go, Mr. Smith.") == normalize("I will not go mister smith")
    assert normalize("[MUSIC] hello (laughs) there") == "hello there"


def test_the_english_rules_are_openai_s():
    # whisper-normalizer adds these four rules; OpenAI's EnglishTextNormalizer has none of them
    assert normalize("the cause is kinda sorta unclear, dunno") == \
        "the cause is kinda sorta unclear dunno"


def test_alignment_counts_dropped_and_inserted_words():
    got = word_errors(["the quick brown fox jumps high", "a b"],
                      ["the quick fox jumps over it", "a b c"])
    # 1st: "brown" inserted, "over" -> "high" substituted, "it" dropped; 2nd: "c" dropped
    assert (got["substitutions"], got["deleted"], got["inserted"], got["ref_words"]) == \
        (1, 2, 1, 9)
    assert got["wer"] == pytest.approx(100 * 4 / 9)
    assert corpus_wer(["the quick brown fox jumps high", "a b"],
                      ["the quick fox jumps over it", "a b c"]) == got["wer"]


def test_corpus_cer_sums_edits_over_all_references():
    # 1 edit over 5 characters + 2 edits over 3: (1 + 2) / 8, not the mean of the two rates
    assert corpus_cer(["hallo", "xyz"], ["hello", "xbc"]) == pytest.approx(100 * 3 / 8)


def test_no_reference_text_is_not_a_score():
    assert corpus_cer(["anything"], [""]) is None
    assert corpus_wer(["anything"], ["?! —"]) is None       # nothing left once normalised
    assert scores([""], [""])["wer"] is None


def test_other_languages_use_the_basic_normaliser_and_korean_counts_no_spaces():
    hyp, ref = "안녕 하세요, 반갑습니다!", "안녕하세요 반갑 습니다."
    got = scores([hyp], [ref], "ko")
    assert got["normalizer"] == "whisper-basic" == normalizer_name("ko")
    assert got["cer_nospace"] == 0.0        # the same characters, spaced differently
    assert got["cer"] > 0 and got["wer"] == 100.0
    assert char_error_rate([hyp], [ref], "ko", spaces=False) == 0.0
    # the basic rule keeps words it does not know (no English numbers or spellings)
    assert normalize("Colour 1465!", "de") == "colour 1465"
    assert scores(["x"], ["y"], "de")["cer_nospace"] is None   # offered for Korean only


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError):
        word_errors(["a"], ["a", "b"])
