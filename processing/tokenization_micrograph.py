"""MVaEMa's default tokenizer: a WordPiece vocabulary trained with `tokenizers` on electron-microscopy text.

The result is a plain `PreTrainedTokenizerFast` (saved as `tokenizer.json`), so a saved model folder loads
with `AutoTokenizer` and needs no emvision code. Special tokens come first, at fixed ids that match
`MVaEMaTextConfig`'s defaults: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 [ENC]=5 [DEC]=6 [EOS]=7.

Any Hugging Face tokenizer may replace it: `prepare_tokenizer(AutoTokenizer.from_pretrained(...))` adds
whatever MVaEMa tokens it lacks (then build the model with `vocab_size=len(tokenizer)` and
`**special_token_ids(tokenizer)` in its text config, or use `from_pretrained_components`).

The default training text is `domain_corpus.txt` (hand-written domain prose shipped next to this file),
the ten question families of the MVaEMa paper, the classification question and the category names.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from emvision.vocabulary import (
    CLASSIFICATION_QUESTION,
    MVAEMA_SPECIAL_TOKENS,
    PROMPT_FAMILIES,
    SEM_CATEGORIES,
    add_mvaema_special_tokens,
    caption_for,
    category_display_name,
)

DOMAIN_CORPUS = Path(__file__).with_name("domain_corpus.txt")
DEFAULT_VOCAB_SIZE = 2048
DEFAULT_MODEL_MAX_LENGTH = 512
# Characters every vocabulary keeps, so units, symbols and punctuation never become [UNK].
_ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation + "µμ°±×÷≈≤≥Å·–—‘’“”"))
# Special-token roles a transformers tokenizer has attributes for; any other role is an extra special token.
_TOKENIZER_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    min_frequency: int = 1,
    lowercase: bool = True,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    special_tokens: Mapping[str, str] = MVAEMA_SPECIAL_TOKENS,
    alphabet: Iterable[str] | None = None,
    grow_vocab_size: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a BERT-style WordPiece tokenizer on `texts` with `special_tokens` at ids 0, 1, 2, ...

    BERT normalisation (lowercased by default, accents stripped with it) and pre-tokenisation; `vocab_size`
    is an upper bound (a small corpus may yield fewer pieces). Plain `tokenizer(text)` wraps a sequence as
    `[CLS] text [SEP]`, the text encoder's input. The result is the same in every process: the trainer's
    tie-breaking depends on the ids of the `##x` continuation symbols, which would otherwise be numbered
    in hash-map order, so they are reserved up front in sorted order.

    `special_tokens` maps roles to tokens, in id order (default: MVaEMa's [PAD]=0 ... [EOS]=7); it must
    name `unk_token`, `cls_token` and `sep_token`. Roles transformers knows (`pad_token`, `mask_token`,
    `bos_token`, ...) become the tokenizer's; any other (MVaEMa's `enc_token`) is an extra special token.
    `alphabet` is the characters every vocabulary keeps besides those of `texts` (default: ASCII letters,
    digits, punctuation and common unit symbols). A `vocab_size` below the special tokens plus twice the
    alphabet is an error, or with `grow_vocab_size=True` is raised to that size.
    """
    texts = [text for text in texts if text and text.strip()]
    if not texts:
        raise ValueError("train_wordpiece_tokenizer needs at least one non-empty text")
    missing = [role for role in ("unk_token", "cls_token", "sep_token") if role not in special_tokens]
    if missing:
        raise ValueError(f"special_tokens must name {', '.join(missing)}")
    base_alphabet = "".join(_ALPHABET if alphabet is None else alphabet)
    normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=lowercase, handle_chinese_chars=True)
    alphabet = set("".join(normalizer.normalize_str(text) for text in texts + [base_alphabet]))
    alphabet = sorted(char for char in alphabet if not char.isspace())
    special = list(special_tokens.values())
    continuation = [f"##{char}" for char in alphabet]
    smallest = len(special) + 2 * len(alphabet)
    if vocab_size < smallest:
        if not grow_vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the special tokens plus the alphabet ({smallest} symbols)"
            )
        vocab_size = smallest

    unk_token = special_tokens["unk_token"]
    scratch = Tokenizer(models.WordPiece(unk_token=unk_token))
    scratch.normalizer = normalizer
    scratch.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special + continuation,
        initial_alphabet=alphabet,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    scratch.train_from_iterator(texts, trainer=trainer)

    # Rebuild from the learned vocabulary so that only `special_tokens` are special (not the `##x` symbols).
    vocab = scratch.get_vocab(with_added_tokens=False)
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token=unk_token, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=lowercase, handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_token, sep_token = special_tokens["cls_token"], special_tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_token} $A {sep_token}",
        pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
        special_tokens=[(cls_token, vocab[cls_token]), (sep_token, vocab[sep_token])],
    )
    roles = {role: token for role, token in special_tokens.items() if role in _TOKENIZER_ROLES}
    extra = [token for role, token in special_tokens.items() if role not in _TOKENIZER_ROLES]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        **({"extra_special_tokens": extra} if extra else {}),
        clean_up_tokenization_spaces=True,
        **roles,
    )


def domain_texts(corpus_path: str | Path = DOMAIN_CORPUS) -> list[str]:
    """The default tokenizer's training text: the corpus lines, the paper's prompts and the class names."""
    path = Path(corpus_path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer corpus not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line and not line.startswith("#")]
    if not texts:
        raise ValueError(f"tokenizer corpus {path} has no text lines")
    texts += [family.question for family in PROMPT_FAMILIES]
    texts += [family.name for family in PROMPT_FAMILIES]
    texts.append(CLASSIFICATION_QUESTION)
    for category in SEM_CATEGORIES:
        texts += [category_display_name(category), caption_for(category)]
    return texts


def build_default_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    corpus_path: str | Path = DOMAIN_CORPUS,
    extra_texts: Iterable[str] = (),
    lowercase: bool = True,
) -> PreTrainedTokenizerFast:
    """Train the default MVaEMa tokenizer (a fraction of a second, identical in every process).

    With the defaults its size is `MVaEMaTextConfig().vocab_size` (2048). `extra_texts` (e.g. the training
    split's answers; never the evaluation split's) join the domain text.
    """
    return train_wordpiece_tokenizer([*domain_texts(corpus_path), *extra_texts], vocab_size=vocab_size, lowercase=lowercase)


def build_default_processor(image_processor=None, **tokenizer_kwargs):
    """An `MVaEMaProcessor` with the default tokenizer and (unless given) a default `MicrographImageProcessor`."""
    from .image_processing_micrograph import MicrographImageProcessor
    from .processing_mvaema import MVaEMaProcessor

    image_processor = image_processor if image_processor is not None else MicrographImageProcessor()
    return MVaEMaProcessor(image_processor=image_processor, tokenizer=build_default_tokenizer(**tokenizer_kwargs))


def prepare_tokenizer(tokenizer):
    """Add whichever MVaEMa special tokens ([ENC], [DEC], [EOS], ...) `tokenizer` lacks; returns it."""
    add_mvaema_special_tokens(tokenizer)
    return tokenizer


__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "DOMAIN_CORPUS",
    "build_default_processor",
    "build_default_tokenizer",
    "domain_texts",
    "prepare_tokenizer",
    "train_wordpiece_tokenizer",
]
