"""MAE data: trajectories with adverse turns, the MAE rule, one sample per assistant turn, JSONL rows."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from posttrain.data.tool_calls import ToolCall, parse_calls
from posttrain.data.tool_records import ToolConversation
from posttrain.errors import DataError
from posttrain.tools.loaders import ToolExample, load_seal_tools
from posttrain.tools.mae import adverse_signature, feedback_after, is_adverse, turn_samples
from posttrain.tools.trajectories import (
    ERROR_KINDS,
    make_trajectories,
    read_trajectories,
    synthetic_result,
    trajectory_row,
    write_trajectories,
)
from tests.data_helpers import require_data

WEATHER = {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "units": {"type": "string"}},
                          "required": ["city"]},
           "responses": {"temp_c": {"type": "float"}, "condition": {"type": "str"}}}
ALARM = {"name": "set_alarm", "description": "Set an alarm.",
         "parameters": {"type": "object", "properties": {"hour": {"type": "integer"},
                                                         "enabled": {"type": "boolean"}},
                        "required": ["hour"]},
         "responses": {"alarm_id": {"type": "int"}}}
TIME = {"name": "get_time", "description": "Time in a zone.",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                       "required": ["timezone"]}}
TOOLS = [WEATHER, TIME, ALARM]
GOLD = [ToolCall("get_weather", {"city": "Paris", "units": "metric"}),
        ToolCall("set_alarm", {"hour": 7, "enabled": True})]
_JSON = {"string": str, "str": str, "integer": int, "int": int, "float": (int, float), "number": (int, float),
         "boolean": bool, "bool": bool}


def _example(i: int, calls=GOLD, tools=TOOLS) -> ToolExample:
    return ToolExample(f"crafted-{i}", "seal-tools", "easy",
                       [{"role": "user", "content": "Weather in Paris, and wake me at 7."}], tools,
                       calls=list(calls), file="crafted.jsonl", line=i + 1)


CRAFTED = [_example(i) for i in range(400)]


def _type_ok(value, declared) -> bool:
    """An independent JSON type check (bool is not a number)."""
    want = _JSON[declared]
    return isinstance(value, want) and not (isinstance(value, bool) and want is not bool)


def _wrongness(bad: list[ToolCall], gold: list[ToolCall], tools: list[dict]) -> set[str]:
    """What is wrong with ``bad`` against the tool specs and the gold, by kind."""
    names = {t["name"]: t for t in tools}
    found = set()
    assert len(bad) == len(gold)
    for b, g in zip(bad, gold):
        if b.name not in names:
            found.add("hallucinated_tool")
            continue
        params = names[b.name]["parameters"]
        if set(b.arguments) - set(params["properties"]):
            found.add("extra_param")
        if any(r in g.arguments and r not in b.arguments for r in params["required"]):
            found.add("missing_required")
        for p, v in b.arguments.items():
            declared = params["properties"].get(p, {}).get("type")
            if declared in _JSON and not _type_ok(v, declared) and _type_ok(g.arguments.get(p), declared):
                found.add("wrong_value")
    return found


def _assistant_turns(conv: ToolConversation) -> list[int]:
    return [i for i, m in enumerate(conv.messages) if m["role"] == "assistant"]


def _check_trajectory(conv: ToolConversation, gold: list[ToolCall]) -> None:
    """Every property a trajectory must have; fails loudly naming the example."""
    kind, where = conv.meta["error_kind"], conv.meta["error_call"]
    turns = _assistant_turns(conv)
    first_assistant = turns[0]
    gold_turn = turns[1] if kind else turns[0]
    assert parse_calls(conv.messages[gold_turn]["content"]).calls == gold, conv.meta
    assert len(feedback_after(conv.messages, gold_turn)) == len(gold)
    if kind:
        bad = parse_calls(conv.messages[first_assistant]["content"]).calls
        differs = [i for i, (b, g) in enumerate(zip(bad, gold)) if b != g]
        if kind == "connection":  # the environment failed: the call itself is the gold one
            assert bad == gold and _wrongness(bad, gold, conv.tools) == set()
        else:
            assert differs == [where], conv.meta
            assert _wrongness(bad, gold, conv.tools) == {kind}, (conv.meta, bad)
        feedback = feedback_after(conv.messages, first_assistant)
        assert len(feedback) == 1
    # the MAE rule flags exactly the erroneous turn
    for i in turns:
        assert is_adverse(feedback_after(conv.messages, i)) == (kind is not None and i == first_assistant), \
            (conv.meta, i, feedback_after(conv.messages, i))


# ----------------------------------------------------------------------------------- trajectories

def test_determinism_and_independence_from_order():
    a = [trajectory_row(c) for c in make_trajectories(CRAFTED[:50], error_rate=0.5, seed=3)]
    b = [trajectory_row(c) for c in make_trajectories(CRAFTED[:50], error_rate=0.5, seed=3)]
    assert json.dumps(a) == json.dumps(b)
    rev = [trajectory_row(c) for c in make_trajectories(CRAFTED[:50][::-1], error_rate=0.5, seed=3)][::-1]
    assert json.dumps(rev) == json.dumps(a)  # seeded per example: order and neighbours do not matter
    other = [trajectory_row(c) for c in make_trajectories(CRAFTED[:50], error_rate=0.5, seed=4)]
    assert json.dumps(other) != json.dumps(a)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.7, 1.0])
def test_error_share_close_to_rate(rate):
    convs = make_trajectories(CRAFTED, error_rate=rate, seed=0)
    share = sum(c.meta["error_kind"] is not None for c in convs) / len(convs)
    assert abs(share - rate) < 0.06, share  # binomial sd at 400 examples is at most 0.025
    if rate in (0.0, 1.0):
        assert share == rate


def test_every_kind_produced_and_really_wrong_crafted():
    convs = make_trajectories(CRAFTED, error_rate=1.0, seed=0)
    kinds = Counter(c.meta["error_kind"] for c in convs)
    assert set(kinds) == set(ERROR_KINDS) and min(kinds.values()) > 40, kinds
    assert {c.meta["error_call"] for c in convs} == {0, 1}  # either call of the turn gets corrupted
    for c in convs:
        _check_trajectory(c, GOLD)


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_each_kind_forced_names_the_culprit(kind):
    for c in make_trajectories(CRAFTED[:40], error_rate=1.0, seed=1, kinds=(kind,)):
        assert c.meta["error_kind"] == kind
        _check_trajectory(c, GOLD)
        bad = parse_calls(c.messages[1]["content"]).calls[c.meta["error_call"]]
        gold = GOLD[c.meta["error_call"]]
        text = c.messages[2]["content"]
        if kind == "hallucinated_tool":
            assert f"name '{bad.name}' is not defined" in text
        elif kind == "extra_param":
            (extra,) = set(bad.arguments) - set(gold.arguments)
            assert f"unexpected keyword argument '{extra}'" in text
        elif kind == "missing_required":
            (missing,) = set(gold.arguments) - set(bad.arguments)
            assert f"required positional argument: '{missing}'" in text
        elif kind == "wrong_value":
            (param,) = [p for p in gold.arguments if bad.arguments[p] != gold.arguments[p]]
            assert f"'{param}'" in text
        else:
            assert adverse_signature(text) == "connection"


def test_no_error_when_no_kind_applies():
    # no call gives a required parameter, so "missing_required" has nothing to drop
    calls = [ToolCall("get_weather", {"units": "metric"})]
    convs = make_trajectories([_example(i, calls) for i in range(20)], error_rate=1.0, seed=0,
                              kinds=("missing_required",))
    assert all(c.meta["error_kind"] is None for c in convs)
    assert len(_assistant_turns(convs[0])) == 1


def test_hallucinated_names_avoid_offered_tools():
    # variants that are offered tools are not hallucinations: they must never be picked
    decoys = [{"name": n, "parameters": {"type": "object", "properties": {}}}
              for n in ("fetch_time", "retrieve_time", "query_time", "get_time_info", "get_time_data")]
    tools = [TIME] + decoys
    calls = [ToolCall("get_time", {"timezone": "UTC"})]
    for c in make_trajectories([_example(i, calls, tools) for i in range(30)], error_rate=1.0, seed=0,
                               kinds=("hallucinated_tool",)):
        name = parse_calls(c.messages[1]["content"]).calls[0].name
        assert name not in {t["name"] for t in tools}, name


def test_final_answer_option():
    for c in make_trajectories(CRAFTED[:20], error_rate=0.5, seed=0, final_answer=True):
        assert c.messages[-1]["role"] == "assistant" and c.messages[-1]["content"].startswith("Here is")
        assert turn_samples(c, mae=True)[-1].trained
    assert make_trajectories(CRAFTED[:1], error_rate=0.0, seed=0)[0].messages[-1]["role"] == "tool"


def test_bad_input_names_file_line_field():
    bfcl_like = ToolExample("simple_0", "bfcl", "simple", [{"role": "user", "content": "hi"}], TOOLS,
                            possible_answer=[{"get_time": {"timezone": ["UTC"]}}], file="b.json", line=7)
    with pytest.raises(DataError) as e:
        make_trajectories([bfcl_like], error_rate=0.5, seed=0)
    assert (e.value.file, e.value.line, e.value.field) == ("b.json", 7, "calls")
    with pytest.raises(DataError) as e:
        make_trajectories([_example(4, [ToolCall("nope", {})])], error_rate=0.5, seed=0)
    assert (e.value.file, e.value.line, e.value.field) == ("crafted.jsonl", 5, "calls[0].name")
    for bad in (dict(error_rate=1.5, seed=0), dict(error_rate=0.5, seed=-1),
                dict(error_rate=0.5, seed=0, kinds=("typo",)), dict(error_rate=0.5, seed=0, kinds=())):
        with pytest.raises(ValueError):
            make_trajectories(CRAFTED[:2], **bad)


# ---------------------------------------------------------------------------------------- the rule

@pytest.mark.parametrize("text, signature", [
    ("NameError: name 'get_y' is not defined", "not_defined"),
    ("NAMEERROR: NAME 'GET_Y' IS NOT DEFINED", "not_defined"),
    ("TypeError: get_x() got an unexpected keyword argument 'foo'", "unexpected_keyword"),
    ("TypeError: get_x() missing 1 required positional argument: 'city'", "positional_argument"),
    ("TypeError: get_x() takes 1 positional argument but 2 were given", "positional_argument"),
    ("Invalid API call: parameter 'hour' must be of type integer", "invalid_api_call"),
    ("invalid api call", "invalid_api_call"),
    ("ConnectionResetError: [Errno 104] Connection reset by peer", "connection"),
    ("Error: connect ECONNREFUSED 127.0.0.1:8080", "connection"),
    ("HTTPSConnectionPool(host='x', port=443): Max retries exceeded with url: /", "connection"),
    ("Request timed out: connection timed out after 10 s", "connection"),
    ("400 Client Error: Bad Request for url: https://api.x.com/v1/f", "http_400"),
    ("HTTP/1.1 400 Bad Request", "http_400"),
    ("HTTP 400: bad parameter", "http_400"),
    ('{"status": 400, "message": "bad hour"}', "http_400"),
    ("Error code: 400 - invalid request", "http_400"),
    ('{"error": "city not found"}', "error_key"),
    ('{"Error": {"code": 17, "message": "quota"}}', "error_key"),
    ('[{"temp_c": 21}, {"error": "timezone unknown"}]', "error_key"),
])
def test_signatures(text, signature):
    assert adverse_signature(text) == signature
    assert is_adverse({"role": "tool", "content": text})
    assert is_adverse([{"role": "tool", "content": '{"ok": 1}'}, {"role": "tool", "content": text}])


@pytest.mark.parametrize("text", [
    '{"summary": "The error rate fell to 2% this year"}',   # the word "error" in a normal value
    '{"error_rate": 0.02}', '{"errors_found": 3}', '{"bit_error_rate": 1e-9}',  # Seal-Tools response fields
    '{"error": null, "result": 5}', '{"error": "", "ok": true}', '{"error": false}',  # "no error"
    '{"count": 400, "status": "ok"}', '{"http_requests": 400}', "Found 400 results.",
    '{"connection_status": "connected", "is_connected": true}',
    '{"definition": "A keyword argument is passed by name."}',
    "It is 21 degrees in Paris.", "",
])
def test_near_misses_are_not_adverse(text):
    assert adverse_signature(text) is None


def test_documented_false_positive_and_empty_feedback():
    # the text signatures read values too (the paper's string match): a result saying "is not defined" is
    # flagged, which only costs one trained sample
    assert is_adverse('{"note": "the term is not defined in the glossary"}')
    assert not is_adverse(None) and not is_adverse([])


def test_synthetic_results_are_deterministic_and_never_adverse():
    for call in GOLD + [ToolCall("get_weather", {"city": "Rome"})]:
        tool = next(t for t in TOOLS if t["name"] == call.name)
        r = synthetic_result(call, tool)
        assert r == synthetic_result(ToolCall(call.name, dict(call.arguments)), tool)
        assert set(r) == set(tool["responses"]) and not is_adverse(json.dumps(r))
    assert synthetic_result(GOLD[0], WEATHER) != synthetic_result(ToolCall("get_weather", {"city": "Rome"}),
                                                                  WEATHER)
    assert isinstance(synthetic_result(GOLD[1], ALARM)["alarm_id"], int)
    # a success never reports failure in its outcome flag; other booleans are answers and vary
    flags = {**TIME, "responses": {"success": {"type": "bool"}, "available": {"type": "bool"}}}
    results = [synthetic_result(ToolCall("get_time", {"timezone": f"UTC+{h}"}), flags) for h in range(40)]
    assert all(r["success"] is True for r in results)
    assert {r["available"] for r in results} == {True, False}
    # a response field named "error" would make a success look like a failure: a plain result instead
    risky = {**TIME, "responses": {"error": {"type": "str"}}}
    r = synthetic_result(ToolCall("get_time", {"timezone": "UTC"}), risky)
    assert "error" not in r and not is_adverse(json.dumps(r))


# ------------------------------------------------------------------------------------------ samples

def _check_samples(conv: ToolConversation) -> None:
    turns = _assistant_turns(conv)
    for mae in (True, False):
        samples = turn_samples(conv, mae=mae)
        assert len(samples) == len(turns) and [s.target for s in samples] == turns
        for s in samples:
            assert s.messages == conv.messages[:s.target + 1] and s.messages[-1]["role"] == "assistant"
            assert s.adverse == is_adverse(feedback_after(conv.messages, s.target))
            assert s.trained == (not (mae and s.adverse))
            assert s.tools is conv.tools
        if not mae:
            assert all(s.trained for s in samples)
    samples = turn_samples(conv, mae=True)
    for k, s in enumerate(samples):
        if s.adverse:
            assert not s.trained
            for later in samples[k + 1:]:  # history keeps the adverse turn and its feedback, unchanged
                assert later.messages[s.target] == conv.messages[s.target]
                assert later.messages[s.target + 1] == conv.messages[s.target + 1]


def test_turn_samples_crafted():
    convs = make_trajectories(CRAFTED[:100], error_rate=0.5, seed=2)
    assert any(c.meta["error_kind"] for c in convs) and not all(c.meta["error_kind"] for c in convs)
    for c in convs:
        _check_samples(c)
    erroneous = next(c for c in convs if c.meta["error_kind"])
    s = turn_samples(erroneous, mae=True)
    assert [x.trained for x in s] == [False, True] and [x.adverse for x in s] == [True, False]
    assert [x.trained for x in turn_samples(erroneous, mae=False)] == [True, True]
    s[1].messages[1]["content"] = "changed"  # samples hold copies: the conversation is untouched
    assert erroneous.messages[1]["content"] != "changed"


def test_turn_samples_handwritten_conversation():
    conv = ToolConversation([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": '[{"name": "get_weather", "arguments": {"town": "Paris"}}]'},
        {"role": "tool", "content": "TypeError: get_weather() got an unexpected keyword argument 'town'"},
        {"role": "assistant", "content": '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'},
        {"role": "tool", "content": '{"temp_c": 21}'},
        {"role": "assistant", "content": "21 °C."},
        {"role": "user", "content": "And Rome?"},
        {"role": "assistant", "content": '[{"name": "get_weather", "arguments": {"city": "Rome"}}]'},
        {"role": "tool", "content": '{"error": "service unavailable"}'},
        {"role": "assistant", "content": "The weather service is down."}], [WEATHER])
    s = turn_samples(conv, mae=True)
    assert [(x.target, x.trained) for x in s] == [(2, False), (4, True), (6, True), (8, False), (10, True)]
    assert all(x.trained for x in turn_samples(conv, mae=False))
    _check_samples(conv)


# --------------------------------------------------------------------------------------------- rows

def test_round_trip(tmp_path):
    convs = make_trajectories(CRAFTED[:60], error_rate=0.5, seed=5, final_answer=True)
    path = write_trajectories(convs, tmp_path / "out" / "traj.jsonl")
    back = read_trajectories(path)
    assert back == convs and [c.meta for c in back] == [c.meta for c in convs]
    assert [ToolConversation.from_row(json.loads(line)) for line in path.read_text().splitlines()] == convs
    assert back[3].file == str(path) and back[3].line == 4


# --------------------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def seal_dev():
    return load_seal_tools(require_data("seal-tools", "dev.jsonl"))


def test_real_seal_tools_trajectories(seal_dev, tmp_path):
    convs = make_trajectories(seal_dev, error_rate=0.3, seed=0)
    assert len(convs) == len(seal_dev) == 700
    kinds = Counter(c.meta["error_kind"] for c in convs)
    share = 1 - kinds[None] / len(convs)
    assert abs(share - 0.3) < 0.06, share
    assert set(kinds) - {None} == set(ERROR_KINDS) and min(kinds[k] for k in ERROR_KINDS) >= 15, kinds
    for ex, c in zip(seal_dev, convs):
        assert c.meta["id"] == ex.id
        _check_trajectory(c, ex.calls)
        _check_samples(c)  # with _check_trajectory: no synthetic result looks like an error
    again = make_trajectories(seal_dev[:100], error_rate=0.3, seed=0)
    assert [trajectory_row(c) for c in again] == [trajectory_row(c) for c in convs[:100]]
    assert read_trajectories(write_trajectories(convs, tmp_path / "seal.jsonl")) == convs
