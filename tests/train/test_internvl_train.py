"""`toolkit train internvl`: the chat-jsonl reader and its one-line errors, answer-only labels, a
short run whose loss falls and that writes a loadable InternVL2-layout checkpoint, LoRA (fewer
trainable parameters; merged weights give the adapter model's logits), exact resume, and the
committed small captioner."""

import json
from pathlib import Path

import pytest
import torch

import toolkit.train.internvl as tr
from toolkit.core.errors import ToolkitError
from toolkit.models.internvl.loading import load_model
from toolkit.models.internvl.prompt import IMG_CONTEXT
from toolkit.train.internvl import (
    TrainOptions,
    count_params,
    encode_sample,
    make_batch,
    params_line,
    prepare,
    read_chat,
    train,
    write_checkpoint,
)

CAPTIONER = Path(tr.__file__).resolve().parents[1] / "assets" / "internvl" / "captioner"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def captions(shared_data):
    return shared_data / "captions"


@pytest.fixture(scope="module")
def chat(captions, tmp_path_factory):
    """Four sentence-caption lines of two images, in a jsonl outside the data folder."""
    d = tmp_path_factory.mktemp("chat")
    lines = (captions / "annotations" / "shapes_train_chat.jsonl").read_text().splitlines()
    (d / "chat.jsonl").write_text("\n".join(lines[:2] + lines[5:7]) + "\n")
    return d / "chat.jsonl"


def _opts(chat, captions, out, **kw):
    base = dict(data=chat, image_root=captions, out=out, preset="internvl-tiny", steps=6,
                batch_size=4, lr=2e-3, warmup=0, threads=1, quiet=True)
    return TrainOptions(**(base | kw))


def test_reader_and_image_root(captions, chat):
    got = read_chat(chat, captions)
    assert len(got) == 4 and got[0].image.is_file()
    assert got[0].turns[0][0].startswith("<image>\n") and got[0].turns[0][1].endswith(".")
    # the default root of a jsonl inside annotations/ is the folder above it
    full = read_chat(captions / "annotations" / "shapes_val_tags.jsonl")
    assert full[0].image == captions / "val" / full[0].image.name


@pytest.mark.parametrize("line, why", [
    ("{not json", "not valid JSON"),
    ('["a"]', "not a JSON object"),
    ('{"conversations": [{"from": "human", "value": "q"}]}', "no \"image\""),
    ('{"image": "train/SHAPES_train_000000000001.jpg", "conversations": '
     '[{"from": "human", "value": "q"}]}', "ends with a human turn"),
    ('{"image": "train/SHAPES_train_000000000001.jpg", "conversations": '
     '[{"from": "gpt", "value": "a"}]}', "turns alternate"),
    ('{"image": "train/nope.jpg", "conversations": [{"from": "human", "value": "q"}, '
     '{"from": "gpt", "value": "a"}]}', "not found under"),
])
def test_bad_line_is_one_line_error_naming_it(captions, chat, tmp_path, line, why):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(chat.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(ToolkitError) as e:
        read_chat(bad, captions)
    msg = str(e.value)
    assert msg.startswith("bad.jsonl line 2: ") and why in msg and "\n" not in msg


def test_labels_cover_the_answer_and_its_end_only(captions, chat):
    loaded = load_model(preset="internvl-tiny")
    samples = read_chat(chat, captions)
    pixels, ids, mask, labels = make_batch(loaded, samples, 1)
    assert pixels.shape == (4, 3, 448, 448)
    tok = loaded.tokenizer
    for b, s in enumerate(samples):
        lab = labels[b][labels[b] != -100].tolist()
        assert tok.decode(lab) == s.turns[0][1]                   # the answer …
        assert lab[-1] == loaded.eos_id                           # … and its <|im_end|>
        kept = labels[b] != -100
        assert not kept[ids[b] == tok.token_id(IMG_CONTEXT)].any()   # image rows masked
        assert not kept[mask[b] == 0].any()                           # padding masked
        n = int(mask[b].sum())
        first = int(kept.nonzero()[0])
        # everything before the answer is the prompt the caption command builds
        assert ids[b, :first].tolist() == loaded.prompt_ids(1, s.turns[0][0])
        assert kept[first:n].all()
    # multi-turn: both answers learnt, the second question not
    ids2, lab2 = encode_sample(loaded, (("<image>\nq one", "red."), ("q two", "blue.")), 1)
    learnt = tok.decode([i for i, j in zip(ids2, lab2) if j != -100])
    assert learnt == "red.blue."


def test_short_run_learns_and_writes_a_loadable_checkpoint(captions, chat, tmp_path):
    out = tmp_path / "run"
    got = train(_opts(chat, captions, out))
    assert got["loss_last"] < 0.7 * got["loss_first"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl"} <= \
        {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["InternVLChatModel"] and "auto_map" not in cfg
    loaded = load_model(str(out))
    assert loaded.layout == "original" and not loaded.random_init
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert {"loss", "lr", "samples_per_s", "eta_s"} <= set(log[0])
    # a non-empty --out is refused without --resume / --force
    with pytest.raises(ToolkitError, match="already holds a training run"):
        train(_opts(chat, captions, out))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="not empty"):
        train(_opts(chat, captions, tmp_path / "other"))


def test_lora_trains_fewer_parameters_and_merges_exactly(tmp_path, capsys):
    loaded = load_model(preset="internvl-tiny")
    full = count_params(loaded.model)[1]
    model = prepare(loaded, TrainOptions(data=Path("x"), lora=True, lora_rank=8,
                                         freeze_vision=True))
    trainable, total = count_params(model)
    assert 0 < trainable < full and total > full
    assert params_line(model).startswith(f"trainable params: {trainable:,d} || all params: ")
    assert not model.language_model.get_input_embeddings().weight.requires_grad
    # --lora-embeddings: the table (tied to the output layer) learns too, and is merged
    emb = load_model(preset="internvl-tiny")
    prepare(emb, TrainOptions(data=Path("x"), lora=True, lora_rank=8, lora_embeddings=True))
    assert emb.model.language_model.get_input_embeddings().weight.requires_grad
    assert all(p.requires_grad for p in emb.model.vision_model.parameters())
    frozen = load_model(preset="internvl-tiny")
    prepare(frozen, TrainOptions(data=Path("x"), freeze_vision=True, freeze_mlp=True))
    assert count_params(frozen.model)[0] == sum(
        p.numel() for p in frozen.model.language_model.parameters())
    torch.manual_seed(3)
    with torch.no_grad():      # adapters that change the output (lora_B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
        model.language_model.get_input_embeddings().weight.add_(0.01)   # a trained table
    model.eval()
    ids = torch.tensor([loaded.prompt_ids(1)])
    pixels = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        want = model(ids, pixels).logits
    write_checkpoint(loaded, tmp_path / "merged", lora=True)
    merged = load_model(str(tmp_path / "merged"))
    with torch.no_grad():
        got = merged.model(ids, pixels).logits
    assert (got - want).abs().max() < 1e-4
    assert not any("lora" in k for k in merged.model.state_dict())


def test_resume_continues_at_the_same_step_with_equal_state(captions, chat, tmp_path,
                                                            monkeypatch):
    straight = tmp_path / "straight"
    train(_opts(chat, captions, straight, steps=4, save_every=2))
    cut = tmp_path / "cut"
    real, calls = tr.make_batch, []

    def stop_at_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "make_batch", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        train(_opts(chat, captions, cut, steps=4, save_every=2))
    monkeypatch.setattr(tr, "make_batch", real)
    state = torch.load(cut / "resume" / "state.pt", weights_only=True)
    assert state["step"] == 2
    train(_opts(chat, captions, cut, steps=4, save_every=2, resume=True))
    a = [json.loads(x) for x in (straight / "train_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (cut / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)
    sa = torch.load(straight / "resume" / "state.pt", weights_only=True)
    sb = torch.load(cut / "resume" / "state.pt", weights_only=True)
    for k, v in sa["model"].items():
        assert torch.allclose(v, sb["model"][k], atol=1e-6), k
    assert sa["scheduler"] == sb["scheduler"]
    with pytest.raises(ToolkitError, match="nothing to resume"):
        train(_opts(chat, captions, tmp_path / "new", resume=True))


def test_option_conflicts():
    with pytest.raises(ToolkitError, match="--merge"):
        TrainOptions(data=Path("x"), merge=True).check()
    with pytest.raises(ToolkitError, match="--lora-embeddings goes with --lora"):
        TrainOptions(data=Path("x"), lora_embeddings=True).check()
    with pytest.raises(ToolkitError, match="--lora-rank"):
        TrainOptions(data=Path("x"), lora_rank=0).check()


def test_the_command_line_is_generated_from_train_options():
    import typer
    from typer.testing import CliRunner

    from toolkit.cli.options import with_options

    app, got = typer.Typer(), []

    @app.command()
    @with_options(opts=TrainOptions)
    def internvl(*, opts):
        got.append(opts)

    @app.command()
    def other():
        pass

    r = CliRunner().invoke(app, ["internvl", "--data", "c.jsonl", "--lora", "--lora-rank", "16",
                                 "--freeze-vision", "--merge", "--eval-data", "k.json"])
    assert r.exit_code == 0, r.output
    o = got[0]
    assert (o.lora, o.lora_rank, o.freeze_vision, o.merge) == (True, 16, True, True)
    assert str(o.eval_data) == "k.json" and TrainOptions(data=Path("x")).lora_rank == 128
    r = CliRunner().invoke(app, ["internvl", "--data", "c.jsonl", "--lora-rank", "0"])
    assert r.exit_code != 0 and "--lora-rank must be at least 1" in r.output


def test_committed_captioner_captions_a_test_image(captions):
    assert (CAPTIONER / "model.safetensors").is_file(), "the committed captioner is missing"
    loaded = load_model(str(CAPTIONER))
    assert not loaded.random_init
    image = captions / "test" / "SHAPES_test_000000004301.jpg"
    text = loaded.caption([image])[0]
    words = text.split()
    assert len(words) >= 3 and text[0].isupper() and ";" not in text, text
