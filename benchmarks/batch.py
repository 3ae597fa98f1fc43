"""The inputs of `cargo xtask bench train`, built the same way on both sides (the Rust side has the
same rules in `moram-bench`'s `train` module): deterministic ordinary token ids, rows of different
lengths left-padded with id 0, labels -100 except each row's last answer tokens."""


def tokens(row, length):
    return [300 + (row * 101 + i * 37) % 5000 for i in range(length)]


def train_batch(seq):
    """`train_192`: 8 rows of 192 down to 136 tokens, 24 answer tokens each (a TRACE-style
    micro-batch); `train_4096`: one MeetingBank-length row of 4096 tokens, 128 answer tokens."""
    rows, answer = (8, 24) if seq <= 512 else (1, 128)
    ids, labels, mask = [], [], []
    for r in range(rows):
        n = seq - 8 * r
        t = tokens(r, n)
        pad = seq - n
        ids.append([0] * pad + t)
        mask.append([0] * pad + [1] * n)
        labels.append([-100] * (seq - answer) + t[n - answer:])
    return ids, labels, mask


EVAL_BATCHES = {"short": (16, 160, 4, 8), "repeat": (16, 160, 4, 8), "prefill": (16, 160, 4, 1),
                "long": (4, 512, 16, 64),
                "meetingbank": (1, 4096, 0, 32)}


def eval_batch(kind):
    """`eval_short`: 16 prompts of 160 down to 100 tokens, 8 new tokens (the demo's evaluation);
    `eval_repeat`: the same batch evaluated again, as a continual-learning run evaluates every
    earlier task after each new one (moram keeps the frozen blocks' pass from the first time;
    the reference, like the official code, recomputes it); `eval_prefill`: `eval_short`'s prompts
    with one new token (the prompts' pass and the first token alone, without decoding);
    `eval_long`: 4 prompts of 512 down to 464 tokens, 64 new tokens; `eval_meetingbank`: one
    4,096-token prompt (TRACE's MeetingBank length), 32 new tokens."""
    if kind not in EVAL_BATCHES:
        raise SystemExit(f"unknown eval case `{kind}` ({', '.join(EVAL_BATCHES)})")
    rows, length, step, new = EVAL_BATCHES[kind]
    return [tokens(r, length - step * r) for r in range(rows)], new
