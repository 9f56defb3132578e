"""The toy world's tokenizer: a small byte-level BPE with one token per digit.

Digits are split before BPE so that every number is spelled digit by digit (the
models compute arithmetic one digit at a time). A ByteLevel decoder makes
`decode(encode(text)) == text` exactly. Saved as a standard Hugging Face folder
(`tokenizer.json` + `tokenizer_config.json` with a chat template), so
`AutoTokenizer.from_pretrained(folder)` loads it and
`apply_chat_template([{"role": "user", "content": q}], tokenize=False,
add_generation_prompt=True)` gives `<|bos|><|user|>\\n{q}\\n<|assistant|>\\n`.
Models are trained on that prompt + answer + `<|eos|>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from autojudge.toy.world import generate_problems

BOS, EOS, PAD, USER, ASSISTANT = "<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, USER, ASSISTANT]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}<|eos|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
VOCAB_SIZE = 512  # target vocabulary size (256 byte symbols + merges + specials)
CORPUS_PROBLEMS = 4000  # problems from the training stream (seed 0) to learn merges on


def corpus_texts(num_problems: int = CORPUS_PROBLEMS, seed: int = 0) -> list[str]:
    """Questions and answers of the training stream, the text the tokenizer learns from."""
    texts: list[str] = []
    for record in generate_problems(num_problems, seed):
        texts.append(record["question"])
        texts.append(record["answer"])
    return texts


def train_raw_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE whose pre-tokenizer isolates every digit."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers wrapper with special tokens and the chat template."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT],
        padding_side="left",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tokenizer(vocab_size: int = VOCAB_SIZE, num_problems: int = CORPUS_PROBLEMS) -> PreTrainedTokenizerFast:
    """Train the toy tokenizer on the seed-0 corpus (deterministic)."""
    return wrap_tokenizer(train_raw_tokenizer(corpus_texts(num_problems), vocab_size))


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Write `tokenizer.json` + `tokenizer_config.json` (chat template included).

    transformers 5 stores the template in `chat_template.jinja`; it is also copied
    into `tokenizer_config.json` for loaders that look there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
