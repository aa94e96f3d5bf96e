"""InternVL's prompt: its chat templates (``conversation.py``: "Hermes-2" for InternVL2-1B's
Qwen2, "internlm2-chat" for InternVL2-2B's InternLM2 — both ChatML, MPT separator style, no
newline after ``<|im_end|>``), the ``<image>`` placeholder and its expansion, the caption
question of InternVL's caption evaluation. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import ToolkitError

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
IMAGE_PLACEHOLDER = "<image>"
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
# InternVL2's system message (kept by InternVL "to avoid changes in benchmark performance")
SYSTEM_MESSAGE = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
                  "是一个有用无害的人工智能助手。")


@dataclass(frozen=True)
class Template:
    name: str
    system: str = "<|im_start|>system\n{system_message}"
    user: str = "<|im_start|>user\n"
    assistant: str = "<|im_start|>assistant\n"
    sep: str = "<|im_end|>"
    bos: bool = False         # InternLM2's tokenizer puts <s> first; Qwen2's adds nothing

    @property
    def stop(self) -> str:
        """The token that ends an answer (InternVL: ``template.sep.strip()``)."""
        return self.sep.strip()


TEMPLATES = {
    "Hermes-2": Template("Hermes-2"),
    "internlm2-chat": Template("internlm2-chat", bos=True),
}


def template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ToolkitError(f"chat template {name!r} is not supported; supported: "
                           f"{', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def image_tokens(tiles: int, per_tile: int) -> str:
    """``<img>`` + ``<IMG_CONTEXT>`` × (per_tile · tiles) + ``</img>``."""
    return IMG_START + IMG_CONTEXT * (per_tile * tiles) + IMG_END


def chat_prompt(name: str, tiles: int, per_tile: int, question: str = CAPTION_PROMPT,
                system_message: str = SYSTEM_MESSAGE) -> str:
    """The text InternVL's ``chat()`` tokenizes for one image and one question, up to the
    assistant's turn (the answer follows it, ended by ``<|im_end|>``)."""
    t = template(name)
    if IMAGE_PLACEHOLDER not in question:
        question = IMAGE_PLACEHOLDER + "\n" + question
    text = (t.system.format(system_message=system_message) + t.sep + t.user + question + t.sep
            + t.assistant)
    return text.replace(IMAGE_PLACEHOLDER, image_tokens(tiles, per_tile), 1)


def splice_embeddings(ids, table, image_embeds, image_token_id: int):
    """The prompt's embeddings, torch-free: rows of ``table`` [V, hidden] at ``ids`` [T], with
    the rows at ``<IMG_CONTEXT>`` replaced, in order, by ``image_embeds`` [..., hidden] (every
    tile of the image, flattened) — ``InternVLChat.splice`` in NumPy (the count is checked)."""
    import numpy as np

    ids = np.asarray(ids, np.int64)
    out = np.array(table[ids], dtype=np.float32)
    where = ids == image_token_id
    flat = np.asarray(image_embeds, np.float32).reshape(-1, out.shape[-1])
    if int(where.sum()) != flat.shape[0]:
        raise ToolkitError(f"the prompt has {int(where.sum())} {IMG_CONTEXT} tokens but the "
                           f"image gives {flat.shape[0]} embeddings")
    out[where] = flat
    return out
