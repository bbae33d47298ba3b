"""The special tokens MVaEMa's text side needs, by role, and the two helpers that fit any tokenizer to them.

The default tokenizer (`emvision.processing.tokenization_micrograph`) stores them first, in this order, so
their ids are 0..7 and match `MVaEMaTextConfig`'s defaults. The helpers only call tokenizer methods, so
this module stays free of torch and transformers.
"""

from __future__ import annotations

MVAEMA_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",  # starts the unimodal text encoder's input; its output is the ITC text summary
    "sep_token": "[SEP]",  # ends the question in the decoder prompt
    "mask_token": "[MASK]",
    "enc_token": "[ENC]",  # replaces [CLS] in the image-grounded text encoder; its output feeds the ITM head
    "bos_token": "[DEC]",  # starts the image-grounded text decoder
    "eos_token": "[EOS]",  # ends every answer
}


def add_mvaema_special_tokens(tokenizer) -> int:
    """Give any Hugging Face tokenizer the special tokens MVaEMa needs; returns the number of tokens added.

    Roles the tokenizer already fills (e.g. BERT's [CLS], [SEP], [PAD]) are kept; the decoder's start and
    end tokens are always MVaEMa's own [DEC] and [EOS], and [ENC] is added as an extra special token. Resize
    the model's embeddings afterwards if tokens were added (`from_pretrained_components` does it).
    """
    roles = {}
    for role in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        if getattr(tokenizer, role, None) is None:
            roles[role] = MVAEMA_SPECIAL_TOKENS[role]
    if tokenizer.bos_token != MVAEMA_SPECIAL_TOKENS["bos_token"]:
        roles["bos_token"] = MVAEMA_SPECIAL_TOKENS["bos_token"]
    if tokenizer.eos_token != MVAEMA_SPECIAL_TOKENS["eos_token"]:
        roles["eos_token"] = MVAEMA_SPECIAL_TOKENS["eos_token"]
    size_before = len(tokenizer)
    if roles:
        tokenizer.add_special_tokens(roles)
    enc = MVAEMA_SPECIAL_TOKENS["enc_token"]
    if enc not in tokenizer.get_vocab():
        tokenizer.add_tokens([enc], special_tokens=True)
    return len(tokenizer) - size_before


def special_token_ids(tokenizer) -> dict[str, int]:
    """The text-config token-id fields read from a tokenizer that has MVaEMa's special tokens."""
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "enc_token_id": tokenizer.convert_tokens_to_ids(MVAEMA_SPECIAL_TOKENS["enc_token"]),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    missing = [name for name, value in ids.items() if value is None or value == tokenizer.unk_token_id]
    if missing:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} lacks MVaEMa's special tokens for {missing}; "
            "call add_mvaema_special_tokens(tokenizer) (emvision.processing.prepare_tokenizer) first"
        )
    return ids
