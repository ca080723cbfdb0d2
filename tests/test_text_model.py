"""TextModel's generation API: one rule for generate and stream, samples with log-probabilities, conversations."""

import numpy as np
import pytest

from textgen.backend import tf
from textgen.config import SEED_MAX
from textgen.errors import ConfigError
from textgen.generation.samples import Sample


def model_log_softmax(model, ids):
    """log softmax of the sequence model's logits for ids (T,): (T, V)."""
    logits = model.keras_model(np.array([ids], np.int32), training=False).numpy()[0].astype(np.float64)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


@pytest.mark.parametrize("call", [
    lambda m: m.generate(5),
    lambda m: m.generate("a", stop=5),
    lambda m: m.generate(["a", 5]),
    lambda m: m.generate("a", stop=[None]),
    lambda m: m.stream(5),
    lambda m: m.stream("a", stop=5),
    lambda m: m.stream("a", temperature=-1),
    lambda m: m.stream("a", chunk_tokens=0),
    lambda m: m.generate("a", include_prompt="yes"),
    lambda m: m.trace(5),
    lambda m: m.trace("a", continuation=3, seed=SEED_MAX + 1),
    lambda m: m.conversation(temperature=float("nan")),
], ids=["generate prompt=5", "generate stop=5", "generate prompt list", "generate stop list", "stream prompt=5",
        "stream stop=5", "stream temperature", "stream chunk_tokens=0", "include_prompt", "trace text=5",
        "trace seed", "conversation temperature"])
def test_bad_arguments_are_a_config_error_when_the_call_is_made(tiny_model, call):
    """Refused at the call itself (a stream before it is iterated), as ConfigError, never TypeError."""
    with pytest.raises(ConfigError, match="Received: "):
        call(tiny_model)


@pytest.mark.parametrize("seed", [SEED_MAX + 1, 2**63 - 1, -1])
def test_every_entry_point_takes_the_seeds_training_takes(tiny_model, seed):
    from textgen.config import SampleConfig, TrainConfig

    for make in (lambda: TrainConfig(seed=seed), lambda: SampleConfig(seed=seed),
                 lambda: tiny_model.generate("a", length=2, seed=seed), lambda: tiny_model.stream("a", seed=seed),
                 lambda: tiny_model.conversation(seed=seed)):
        with pytest.raises(ConfigError, match=f"seed must be between 0 and {SEED_MAX}. Received: seed={seed}$"):
            make()
    assert tiny_model.generate("a", length=2, seed=SEED_MAX).startswith("a")


@pytest.mark.parametrize("arguments", [
    dict(prompt="ROMEO:"),
    dict(prompt="ROMEO:", include_prompt=False),
    dict(prompt=["ROMEO:", ""], num_samples=2),
    dict(prompt=["ROMEO:"], stop=["\n", "th"], num_samples=3),
    dict(prompt="JULIET:", temperature=0, stop="e"),
    dict(prompt="ROMEO:", details=True),
    dict(prompt=["ROMEO:", "JULIET:"], stop="\n", details=True),
], ids=["one", "without prompt", "lists", "stops", "greedy", "details", "details and stops"])
def test_stream_yields_what_generate_returns_and_ends_with_it(tiny_model, arguments):
    """One rule: the same arguments and defaults, each item shaped as generate's answer, the last equal to it."""
    settings = dict(length=45, seed=5, **arguments)
    expected = tiny_model.generate(**settings)
    items = list(tiny_model.stream(chunk_tokens=7, **settings))
    assert len(items) > 1 and items[-1] == expected
    for earlier, later in zip(items, items[1:]):
        assert type(earlier) is type(expected)
        earlier, later = ([earlier], [later]) if not isinstance(earlier, list) else (earlier, later)
        for before, after in zip(earlier, later):  # nothing shown is ever taken back
            before_text, after_text = (before.text, after.text) if isinstance(before, Sample) else (before, after)
            assert after_text.startswith(before_text)
    first = items[0] if isinstance(items[0], list) else [items[0]]
    if not settings.get("include_prompt", True) or settings.get("details"):
        return
    prompts = [settings["prompt"]] if isinstance(settings["prompt"], str) else settings["prompt"]
    rows = [prompt for prompt in prompts for _ in range(settings.get("num_samples", 1))]
    assert all(text.startswith(prompt) for text, prompt in zip(first, rows))  # the prompt, as generate gives it


def test_a_samples_tokens_are_scored_under_the_models_own_distribution(tiny_model):
    prompt = "ROMEO:"
    for settings in (dict(temperature=0.7, top_k=5), dict(temperature=0), dict(temperature=1.3, top_p=0.5)):
        sample = tiny_model.generate(prompt, length=30, seed=2, details=True, **settings)
        given = tiny_model.tokenizer.encode(prompt).tolist()
        ids = given + sample.token_ids.tolist()
        expected = model_log_softmax(tiny_model, ids)[np.arange(len(given) - 1, len(ids) - 1), ids[len(given):]]
        np.testing.assert_allclose(sample.logprobs, expected, atol=1e-4)
        assert sample.logprob == pytest.approx(expected.sum(), abs=1e-3)
        assert sample.text == "".join(sample.tokens) and sample.stop_reason == "length"


def test_a_sample_ended_by_a_stop_string_counts_the_stop_among_its_tokens(tiny_model):
    free = tiny_model.generate("ROMEO:", length=80, seed=11, include_prompt=False)
    stop = free[10:12]
    sample = tiny_model.generate("ROMEO:", length=80, seed=11, stop=["zzz", stop], details=True)
    assert sample.text == free[:free.find(stop)]
    assert sample.stop_reason == "stop" and sample.stop_string == stop
    assert "".join(sample.tokens) == sample.text + stop  # char tokens: the text, then its stop
    record = sample.to_dict(tokens=True)
    assert record["stop_reason"] == "stop" and record["num_tokens"] == len(record["tokens"])
    assert record["logprob"] == pytest.approx(sum(token["logprob"] for token in record["tokens"]), abs=1e-4)
    assert record["settings"] == {"length": 80, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "stop": ["zzz", stop]}


def test_samples_are_the_texts_generate_returns(tiny_model):
    settings = dict(prompt=["ROMEO:", "O"], length=30, seed=3, num_samples=2, stop="\n")
    samples = tiny_model.generate(details=True, **settings)
    assert [sample.prompt + sample.text for sample in samples] == tiny_model.generate(**settings)
    assert [sample.index for sample in samples] == [0, 1, 2, 3]
    assert all(sample.seed == 3 for sample in samples)


def state_after(model, text):
    ids = model.tokenizer.encode(text).tolist()
    _, states = model.generator.warm(tf.constant(ids, tf.int32), tf.constant([len(ids)], tf.int32))
    return states.numpy()


def test_a_conversation_carries_the_state_from_turn_to_turn(tiny_model):
    conversation = tiny_model.conversation(length=20, seed=4)
    first = "".join(conversation.say("ROMEO:"))
    assert first == tiny_model.generate("ROMEO:", length=20, seed=4, include_prompt=False)
    second = "".join(conversation.say("JULIET:"))
    assert conversation.text == "ROMEO:" + first + "JULIET:" + second
    # The state carried is the state after reading the whole conversation at once.
    np.testing.assert_allclose(conversation._carried[1].numpy(), state_after(tiny_model, conversation.text),
                               atol=1e-5)
    # Greedy, the next turn continues exactly what the model would continue from the whole text.
    conversation.update(temperature=0)
    before = conversation.text
    third = "".join(conversation.say(" O"))
    assert third == tiny_model.generate(before + " O", length=20, temperature=0, include_prompt=False)


def test_a_turn_stopped_early_keeps_exactly_the_pieces_given(tiny_model):
    conversation = tiny_model.conversation(length=200, seed=1, chunk_tokens=8)
    pieces = conversation.say("ROMEO:")
    first = next(pieces)
    pieces.close()
    assert conversation.text == "ROMEO:" + first and len(first) == 8
    np.testing.assert_allclose(conversation._carried[1].numpy(), state_after(tiny_model, conversation.text),
                               atol=1e-5)


def test_the_same_seed_and_turns_give_the_same_conversation_and_reset_starts_over(tiny_model):
    def talk(seed):
        conversation = tiny_model.conversation(length=15, seed=seed)
        return conversation, ["".join(conversation.say(text)) for text in ("ROMEO:", "", "JULIET:")]

    conversation, turns = talk(7)
    assert talk(7)[1] == turns and talk(8)[1] != turns
    assert turns[1] != turns[0]  # the token index goes on across turns: an empty turn does not repeat one
    conversation.reset()
    assert conversation.text == "" and "".join(conversation.say("ROMEO:")) == turns[0]


def test_a_conversations_settings_are_checked_and_kept_when_refused(tiny_model):
    conversation = tiny_model.conversation(temperature=0.5, seed=3)
    with pytest.raises(ConfigError, match="Received: temperature=-1"):
        conversation.update(temperature=-1)
    with pytest.raises(ConfigError, match="Received: top_k="):
        conversation.update(top_k=tiny_model.config.vocab_size + 1)
    with pytest.raises(ConfigError, match="Received: setting='num_samples'"):
        conversation.update(num_samples=2)
    with pytest.raises(ConfigError, match="Received: prompt=5"):
        conversation.say(5)
    assert conversation.settings.temperature == 0.5 and conversation.settings.seed == 3
    assert conversation.update(top_p=0.9).top_p == 0.9
