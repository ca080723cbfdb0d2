"""The HTTP API of textgen serve, on loopback: answers equal textgen's own sampling, refusals are 4xx JSON."""

import concurrent.futures
import json
import socket
import time

import httpx
import numpy as np
import pytest

from running_server import serve_models
from textgen.serving.api import ServerLimits


@pytest.fixture(scope="module")
def server(tiny_model):
    """A server over the tiny model, named "tiny", with the default limits."""
    running = serve_models({"tiny": tiny_model})
    yield running
    running.close()


def events(response):
    """The server-sent events of a streamed response: [(event name or None, data)]."""
    parsed, name, data = [], None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
        elif line == "" and data:
            payload = "\n".join(data)
            parsed.append((name, payload if payload == "[DONE]" else json.loads(payload)))
            name, data = None, []
    return parsed


def expected_records(model, prompt, **settings):
    samples = model.generate(prompt, details=True, **settings)
    return [sample.to_dict() for sample in (samples if isinstance(samples, list) else [samples])]


def same_records(got, expected):
    """Samples as JSON, equal but for the last bits of each log-probability (sums of float32 values that
    come from batches of other sizes)."""
    def without_logprob(records):
        return [{key: value for key, value in record.items() if key != "logprob"} for record in records]

    assert without_logprob(got) == without_logprob(expected)
    np.testing.assert_allclose([record["logprob"] for record in got], [record["logprob"] for record in expected],
                               rtol=1e-5, atol=1e-4)
    return True


def test_generate_answers_what_textgen_sample_gives(server, tiny_model):
    body = {"prompt": ["The ", "End"], "length": 40, "temperature": 0.9, "top_k": 5, "seed": 17, "num_samples": 2,
            "stop": ["\n\n"]}
    answer = server.client.post("/v1/generate", json=body)
    assert answer.status_code == 200
    settings = {key: body[key] for key in ("length", "temperature", "top_k", "seed", "num_samples", "stop")}
    answer = answer.json()
    assert (answer["model"], answer["seed"]) == ("tiny", 17)
    assert same_records(answer["samples"], expected_records(tiny_model, body["prompt"], **settings))


def test_a_seed_is_drawn_when_none_is_given_and_reported(server, tiny_model):
    answer = server.client.post("/v1/generate", json={"prompt": "a", "length": 20}).json()
    assert same_records(answer["samples"], expected_records(tiny_model, "a", length=20, seed=answer["seed"]))


def test_a_stream_sends_the_text_token_by_token_then_each_sample_then_done(server, tiny_model):
    with server.client.stream("POST", "/v1/generate", json={"prompt": "The ", "length": 120, "seed": 3,
                                                           "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = events(response)
    names = [name for name, _ in received]
    assert names.count("token") >= 3 and names[-2:] == ["sample", "done"]
    (expected,) = expected_records(tiny_model, "The ", length=120, seed=3)
    assert "".join(data["text"] for name, data in received if name == "token") == expected["text"]
    assert same_records([received[-2][1]], [expected])
    assert received[-1][1] == {"model": "tiny", "seed": 3, "samples": 1}


def test_many_concurrent_clients_with_mixed_settings_each_get_what_sample_gives(server, tiny_model):
    rng = np.random.default_rng(4)
    bodies = [{"prompt": str(rng.choice(["", "The ", "End", "a b"])), "length": int(rng.integers(1, 150)),
               "temperature": float(rng.choice([0.0, 0.5, 1.0, 1.5])), "top_k": int(rng.choice([0, 3])),
               "top_p": float(rng.choice([1.0, 0.8])), "seed": int(rng.integers(0, 10**6)),
               "stop": [[], ["e"], ["\n", "th"]][int(rng.integers(0, 3))], "stream": bool(rng.integers(0, 2))}
              for _ in range(40)]

    def ask(body):
        with httpx.Client(base_url=server.url, timeout=120) as client:
            if not body["stream"]:
                return client.post("/v1/generate", json=body).json()["samples"]
            with client.stream("POST", "/v1/generate", json=body) as response:
                return [data for name, data in events(response) if name == "sample"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(ask, bodies))
    for body, answer in zip(bodies, answers):
        settings = {key: body[key] for key in ("length", "temperature", "top_k", "top_p", "seed", "stop")}
        assert same_records(answer, expected_records(tiny_model, body["prompt"], **settings)), body


def test_the_official_openai_client_completes_and_streams(server, tiny_model):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    assert [model.id for model in client.models.list().data] == ["tiny"]

    completion = client.completions.create(model="tiny", prompt="The ", max_tokens=30, temperature=0.7, seed=9)
    (expected,) = expected_records(tiny_model, "The ", length=30, temperature=0.7, seed=9)
    assert completion.choices[0].text == expected["text"]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 30

    # Two prompts, n=2, a stop string and top_k through extra_body: choices prompt by prompt, n each.
    settings = dict(length=25, temperature=1.0, top_k=4, seed=21, num_samples=2, stop=["e"])
    expected = expected_records(tiny_model, ["a", "End"], **settings)
    stream = client.completions.create(model="tiny", prompt=["a", "End"], max_tokens=25, temperature=1.0, n=2,
                                       seed=21, stop="e", stream=True, stream_options={"include_usage": True},
                                       extra_body={"top_k": 4})
    texts, finish, usage = ["", "", "", ""], [None] * 4, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            finish[choice.index] = choice.finish_reason or finish[choice.index]
    assert texts == [record["text"] for record in expected]
    assert finish == ["stop" if record["stop_reason"] == "stop" else "length" for record in expected]
    assert usage.completion_tokens == sum(record["num_tokens"] for record in expected)


def refusal(answer, status, *words):
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert "\n" not in error["message"] and all(word in error["message"] for word in words), error
    return error


def test_bad_requests_are_one_line_4xx_json_errors(server):
    client = server.client
    refusal(client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"}), 400,
            "not valid JSON")
    error = refusal(client.post("/v1/generate", json={"prompt": "a", "lenght": 5}), 400, "unknown field", "lenght")
    assert error["param"] == "lenght"
    refusal(client.post("/v1/generate", json={"temperature": -1}), 400, "temperature", "Received: temperature=-1")
    refusal(client.post("/v1/generate", json={"top_p": 0}), 400, "top_p")
    refusal(client.post("/v1/generate", json={"length": "5"}), 400, "length")  # strict: no strings for numbers
    refusal(client.post("/v1/generate", json={"length": 2001}), 400, "at most 2000", "Received: length=2001")
    refusal(client.post("/v1/generate", json={"seed": 2**40}), 400, "seed")
    refusal(client.post("/v1/generate", json=[1, 2]), 400, "JSON object")
    refusal(client.post("/v1/generate", json={"model": "nope"}), 404, "nope")
    refusal(client.post("/v1/completions", json={"prompt": "a", "logprobs": 3}), 400, "logprobs")
    refusal(client.post("/v1/completions", json={"prompt": "a", "max_tokens": 0}), 400, "length")
    refusal(client.post("/v1/inspect", json={"text": "a" * 5000}), 400, "at most 4000")
    assert client.get("/health").json()["open_requests"] == 0


def test_a_body_over_the_limit_is_refused_with_413_declared_or_not(server):
    refusal(server.client.post("/v1/generate", content=b" " * (2 << 20), headers={"content-type": "application/json"}),
            413, "at most")

    def chunks():
        for _ in range(40):
            yield b" " * 65536

    refusal(server.client.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"}),
            413, "at most")
    assert server.client.post("/v1/generate", json={"prompt": "a", "length": 3}).status_code == 200


def test_requests_beyond_the_limit_get_429_while_the_others_are_served(tiny_model):
    running = serve_models({"tiny": tiny_model}, limits=ServerLimits(max_requests=2))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as first, httpx.Client(base_url=running.url,
                                                                                   timeout=60) as second:
            with first.stream("POST", "/v1/generate", json={"length": 2000, "stream": True, "seed": 1}) as one, \
                    second.stream("POST", "/v1/generate", json={"length": 2000, "stream": True, "seed": 2}) as two:
                assert one.status_code == two.status_code == 200
                refusal(running.client.post("/v1/generate", json={"length": 5}), 429, "as many requests")
        deadline = time.monotonic() + 30
        while running.client.get("/health").json()["open_requests"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.client.post("/v1/generate", json={"length": 5}).status_code == 200
    finally:
        running.close()


def test_a_client_that_leaves_mid_stream_takes_its_rows_out_of_the_loop(server, tiny_model):
    health = server.client.get
    with httpx.Client(base_url=server.url, timeout=60) as other:
        with other.stream("POST", "/v1/generate", json={"prompt": "a", "length": 400, "seed": 8, "stream": True}) as kept:
            sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
            body = json.dumps({"prompt": ["The "] * 4, "length": 2000, "stream": True}).encode()
            sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            received = b""
            while b"event: token" not in received:
                received += sock.recv(65536)
            assert health("/health").json()["models"]["tiny"]["active_rows"] >= 4
            sock.close()
            deadline = time.monotonic() + 10
            while health("/health").json()["models"]["tiny"]["active_rows"] > 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert health("/health").json()["models"]["tiny"]["active_rows"] <= 1  # only the client that stayed
            samples = [data for name, data in events(kept) if name == "sample"]
    assert same_records(samples, expected_records(tiny_model, "a", length=400, seed=8))
    assert health("/health").json()["open_requests"] == 0


def test_an_api_key_is_required_when_set(tiny_model):
    running = serve_models({"tiny": tiny_model}, api_key="sesame")
    try:
        refusal(running.client.get("/v1/models"), 401, "API key")
        assert running.client.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert running.client.get("/health").status_code == 200  # health and the page stay open
    finally:
        running.close()


def test_health_models_openapi_and_inspect(server, tiny_model):
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["limits"]["max_length"] == 2000
    card = server.client.get("/v1/models").json()["data"][0]
    assert card["id"] == "tiny" and card["object"] == "model" and card["textgen"]["units"] == tiny_model.config.units
    spec = server.client.get("/openapi.json").json()
    assert {"/v1/generate", "/v1/completions", "/v1/models", "/v1/inspect", "/health"} <= set(spec["paths"])
    assert "GenerateBody" in spec["components"]["schemas"]
    traced = server.client.post("/v1/inspect", json={"text": "The end"}).json()
    expected = tiny_model.trace("The end")
    assert traced["tokens"] == expected.tokens
    np.testing.assert_allclose(traced["layers"][1]["forget"], expected.layers[1]["forget"], atol=1e-6)
    # With a prompt, the prompt's tokens are marked as given and the text's as generated.
    marked = server.client.post("/v1/inspect", json={"prompt": "The ", "text": "end"}).json()
    assert marked["tokens"] == expected.tokens and marked["generated_from"] == 4
    assert traced["generated_from"] == 0  # a text alone: all of it was generated
    page = server.client.post("/v1/inspect", json={"text": "The end", "format": "html"})
    assert page.headers["content-type"].startswith("text/html") and "__TRACE_DATA__" not in page.text
    assert server.client.get("/").headers["content-type"].startswith("text/html")
