"""``toolkit translate`` as a user runs it: the default model, an artifact, files in and out,
and the one-line errors."""

from support.cli import fails_cleanly, run_toolkit


def test_the_default_model_translates_a_sentence():
    r = run_toolkit("translate", "The file could not be opened.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "O arquivo não pôde ser aberto."


def test_a_file_one_sentence_per_line_from_an_artifact(marian_artifact, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Show hidden files\n\nThe file could not be opened.\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    r = run_toolkit("translate", "--input", src, "--artifact", marian_artifact, "-o", out)
    assert r.returncode == 0, r.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["Mostrar arquivos ocultos", "", "O arquivo não pôde ser aberto."]
    fails_cleanly("translate", "--input", src, "--artifact", marian_artifact, "-o", out,
                  contains="exists")


def test_a_pair_the_models_do_not_have():
    line = fails_cleanly("translate", "Hello", "--to", "de", contains="translating into de")
    assert "en→pt" in line and "pt→en" in line


def test_an_artifact_asked_for_another_pair(marian_artifact):
    fails_cleanly("translate", "Olá", "--artifact", marian_artifact, "--from", "pt",
                  contains="translates en→pt")


def test_empty_and_unreadable_input(tmp_path):
    fails_cleanly("translate", "", contains="empty")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("não".encode("latin-1"))
    fails_cleanly("translate", "--input", bad, contains="not UTF-8")
    fails_cleanly("translate", contains="nothing to translate")


def test_shortlist_flags():
    """--no-shortlist decodes over the whole vocabulary; --shortlist on a model without one is
    a one-line error."""
    r = run_toolkit("translate", "The file could not be opened.", "--no-shortlist")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "O arquivo não pôde ser aberto."
    fails_cleanly("translate", "Hello.", "--preset", "bergamot-tiny", "--backend", "torch",
                  "--shortlist", contains="no lexical shortlist")
