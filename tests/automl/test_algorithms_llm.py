"""LLM family against a real local HTTP server speaking OpenAI chat-completions (no mocks)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mal.automl.algorithms import LLMError, make_algorithm
from mal.errors import SpecError
from support.spaces import LR_WD

KEY = "sk-test-key-0123456789"
SPACE = LR_WD


class ChatServer:
    """Answers each POST with the next scripted (status, body) and records the requests it saw."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str]] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                server.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                status, body = server.script.pop(0) if server.script else (500, "script exhausted")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def reply(self, content: str, status: int = 200) -> None:
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.script.append((status, body))

    def propose(self, lr: float, wd: float, reasoning: str = "smaller steps") -> None:
        self.reply(
            "Here you go:\n```json\n"
            + json.dumps({"params": {"train.lr": lr, "train.wd": wd}, "reasoning": reasoning})
            + "\n```"
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.close()


def settings(server: ChatServer, **extra) -> dict:
    return {
        "llm_endpoint": server.url,
        "llm_model": "tiny-test",
        "llm_api_key": KEY,
        "automl_max_experiments": 4,
        "automl_max_concurrent": 1,
        **extra,
    }


def test_good_reply_is_used_and_logged_without_the_key(server):
    algo = make_algorithm("llm", SPACE, settings(server))
    server.propose(2e-6, 1e-3)
    rec = algo.ask()
    assert rec.params == {"train.lr": 2e-6, "train.wd": 1e-3} and rec.info["source"] == "llm"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "tiny-test"
    assert "train.lr" in request["body"]["messages"][1]["content"]  # the prompt carries the space
    algo.tell(rec.rec_id, 0.42)
    server.propose(3e-6, 2e-3)
    second = algo.ask()
    prompt = json.loads(server.requests[1]["body"]["messages"][1]["content"].split("\n\n")[0])
    assert prompt["results_so_far"][0]["metric"] == 0.42  # the model sees the prior result
    proposal = [e for e in algo.brain_log if e["event"] == "proposal"][-1]
    assert proposal["rec_id"] == second.rec_id and proposal["prior_results"][0]["metric"] == 0.42
    state_text = json.dumps(algo.state_dict())
    assert KEY not in state_text and KEY not in json.dumps(algo.brain_log) and KEY not in repr(algo.client)


def test_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("MAL_LLM_API_KEY", "env-key-987")
    algo = make_algorithm("llm", SPACE, {**settings(server), "llm_api_key": None})
    server.propose(2e-6, 1e-3)
    algo.ask()
    assert server.requests[0]["auth"] == "Bearer env-key-987"


def test_error_reply_is_a_clear_failure_without_the_key(server):
    algo = make_algorithm("llm", SPACE, settings(server))
    server.script.append((401, json.dumps({"error": f"invalid key {KEY}"})))
    with pytest.raises(LLMError, match="answered HTTP 401") as caught:
        algo.ask()
    assert KEY not in str(caught.value)
    assert not algo.trials  # nothing was recommended, no silent random fallback


def test_credentials_in_the_endpoint_url_go_to_a_basic_header_and_never_into_a_message(server, monkeypatch):
    monkeypatch.delenv("MAL_LLM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    password = "p@ss-planted-77"
    endpoint = server.url.replace("http://", f"http://llm-user:{password}@")
    algo = make_algorithm("llm", SPACE, {**settings(server), "llm_api_key": None, "llm_endpoint": endpoint})
    server.propose(2e-6, 1e-3)
    algo.tell(algo.ask().rec_id, 0.5)
    assert server.requests[0]["auth"] == "Basic " + base64.b64encode(f"llm-user:{password}".encode()).decode()
    assert server.requests[0]["path"] == "/v1/chat/completions"
    server.script.append((403, json.dumps({"error": f"user llm-user with {password} may not"})))
    with pytest.raises(LLMError, match="answered HTTP 403") as caught:
        algo.ask()
    assert password not in str(caught.value) and "ss-planted" not in str(caught.value)
    assert f"{server.url}/chat/completions" in str(caught.value)
    assert password not in repr(algo.client) and password not in json.dumps(algo.state_dict())


def test_garbage_reply_is_retried_once_then_fails(server):
    algo = make_algorithm("llm", SPACE, settings(server))
    server.reply("I think a learning rate of about 3e-6 would be nice.")
    server.reply("still no json")
    with pytest.raises(LLMError, match="no usable proposal in 2 tries"):
        algo.ask()
    assert [e["event"] for e in algo.brain_log] == ["rejected_reply", "rejected_reply"]
    assert len(server.requests) == 2 and "cannot be used" in server.requests[1]["body"]["messages"][-1]["content"]


def test_out_of_range_proposal_is_rejected_then_corrected(server):
    algo = make_algorithm("llm", SPACE, settings(server))
    server.propose(0.5, 1e-3)  # lr far outside [1e-7, 1e-5]
    server.propose(5e-6, 1e-3)
    rec = algo.ask()
    assert rec.params["train.lr"] == 5e-6
    assert "outside its search space" in algo.brain_log[0]["reason"]


def test_unreachable_endpoint_and_missing_settings():
    algo = make_algorithm("llm", SPACE, {"llm_endpoint": "http://127.0.0.1:9/v1", "llm_model": "m"})
    with pytest.raises(LLMError, match="could not be reached"):
        algo.ask()
    with pytest.raises(SpecError, match="llm_endpoint is required"):
        make_algorithm("llm", SPACE, {"llm_model": "m"})


def test_state_round_trip_needs_no_new_llm_calls(server):
    algo = make_algorithm("llm", SPACE, settings(server))
    for lr in (2e-6, 3e-6):
        server.propose(lr, 1e-3)
        algo.tell(algo.ask().rec_id, lr * 1e5)
    state = json.loads(json.dumps(algo.state_dict()))
    calls = len(server.requests)
    restored = make_algorithm("llm", SPACE, settings(server))
    restored.load_state_dict(state)
    assert len(server.requests) == calls
    assert restored.brain_log == algo.brain_log and restored.best().metric == algo.best().metric


def test_autoresearch_starts_from_the_baseline_and_keeps_or_discards(server):
    algo = make_algorithm("autoresearch", SPACE, settings(server, automl_max_concurrent=4))
    baseline = algo.ask()
    assert baseline.params == SPACE.defaults() and not server.requests
    assert algo.ask() is None  # one experiment at a time
    algo.tell(baseline.rec_id, 0.5)
    server.propose(2e-6, 5e-4, "double the lr")
    worse = algo.ask()
    algo.tell(worse.rec_id, 0.4)
    server.propose(1e-6, 1e-3, "more wd")
    better = algo.ask()
    prompt = json.loads(server.requests[-1]["body"]["messages"][1]["content"].split("\n\n")[0])
    assert prompt["incumbent"]["rec_id"] == baseline.rec_id and prompt["decisions"] == {"0": "keep", "1": "discard"}
    algo.tell(better.rec_id, 0.6)
    decisions = [(e["rec_id"], e["decision"]) for e in algo.brain_log if e["event"] == "decision"]
    assert decisions == [(0, "keep"), (1, "discard"), (2, "keep")]
    assert algo.incumbent == better.rec_id


def test_hybrid_alternates_llm_and_tpe(server):
    algo = make_algorithm("hybrid", SPACE, settings(server, automl_max_experiments=4))
    sources = []
    for i in range(4):
        if i % 2 == 0:
            server.propose(1e-6 * (i + 1), 1e-3)
        rec = algo.ask()
        sources.append(rec.info["source"])
        algo.tell(rec.rec_id, 0.1 * i)
    assert sources == ["llm", "tpe", "llm", "tpe"] and len(server.requests) == 2
    assert algo.is_finished()
