"""PKT (TL-Training's key tokens) on the real SmolLM2 tokenizer."""
from __future__ import annotations

from posttrain.data.tool_calls import ToolCall, format_calls
from posttrain.methods.tool_sft.key_tokens import call_spans, name_tokens, pkt_weights
from tests.data_helpers import load_smollm2_tokenizer


def weights_of(tok, calls, tool_names, max_weight=9.0):
    """Render one assistant reply holding `calls`; return per-token (text, weight) of the reply."""
    from posttrain.data.template import render
    reply = format_calls([ToolCall(n, a) for n, a in calls])
    msgs = [{"role": "user", "content": "Help me."}, {"role": "assistant", "content": reply}]
    text = render(tok, msgs)
    start = len(render(tok, msgs[:1], add_generation_prompt=True))
    ids, w, n_keys = pkt_weights(tok, text, start, reply, tool_names, max_weight)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == enc["input_ids"]
    toks = [(tok.decode([i]), wt, o) for i, wt, o in zip(ids, w, enc["offset_mapping"])]
    return [(t, wt) for t, wt, (a, b) in toks if a >= start], n_keys, reply


def call_token_count(tok, reply):
    (name, n0, n1, c0, c1), = call_spans(reply)
    return c0, c1


def test_the_first_name_token_is_key_and_weighs_non_key_over_key_clipped():
    tok = load_smollm2_tokenizer()
    toks, n_keys, reply = weights_of(tok, [("get_weather", {"city": "Paris"})], ["get_weather",
                                                                                 "search_flights"])
    keyed = [(t, w) for t, w in toks if w != 1.0]
    assert n_keys == 1 and [t for t, _ in keyed] == ["get"]  # no other tool shares a prefix
    # |NK| = the call's other tokens: {"name": "get_weather", "arguments": {"city": "Paris"}} minus "get"
    enc = tok(reply, add_special_tokens=False, return_offsets_mapping=True)
    c0, c1 = call_token_count(tok, reply)
    in_call = [o for o in enc["offset_mapping"] if o[0] < c1 and o[1] > c0]
    assert keyed[0][1] == min(max((len(in_call) - 1) / 1, 1), 9)


def test_divergence_tokens_of_tools_sharing_a_prefix_are_key():
    tok = load_smollm2_tokenizer()
    assert name_tokens(tok, "get_weather")[:2] == name_tokens(tok, "get_time")[:2]
    tools = ["get_weather", "get_time", "getWeather", "search_flights"]
    toks, n_keys, _ = weights_of(tok, [("get_weather", {"city": "Paris"})], tools)
    keyed = [t for t, w in toks if w != 1.0]
    # "get" first; get_time shares "get", "_" (diverges at "weather"); getWeather shares "get" (diverges at
    # "_")
    assert keyed == ["get", "_", "weather"] and n_keys == 3
    w = {t: wt for t, wt in toks if wt != 1.0}
    assert len(set(w.values())) == 1


def test_a_gold_name_that_is_a_prefix_of_another_makes_the_closing_quote_key():
    tok = load_smollm2_tokenizer()
    toks, n_keys, _ = weights_of(tok, [("get_weather", {})], ["get_weather", "get_weather_forecast"])
    keyed = [t for t, w in toks if w != 1.0]
    assert keyed[0] == "get" and len(keyed) == 2 and '"' in keyed[1]  # the token after the name decides


def test_key_weights_clip_at_1_and_at_max():
    tok = load_smollm2_tokenizer()
    long_args = {"text": "word " * 200}
    toks, _, _ = weights_of(tok, [("a", long_args)], ["a"])
    assert max(w for _, w in toks) == 9.0  # |NK|/|K| is in the hundreds
    toks, _, _ = weights_of(tok, [("a", long_args)], ["a"], max_weight=3.0)
    assert max(w for _, w in toks) == 3.0
    # eleven key tokens, but the ratio is still 2 (NOT clipped; the lower clip is pinned by
    # test_key_weight_really_clips_at_1_when_key_tokens_outnumber_the_others):
    # {"name": "x_y_y_y_y_y_y_y_y_y_y_y", "arguments": {}} -> 33 tokens: ['{"', 'name', '":', ' "',
    #   'x', '_', 'y', ... (23 name tokens) ..., '",', ' "', 'arguments', '":', ' {}', '}]'];
    # K = {'x'} + the '_' before each of the 10 later 'y's = 11, |NK| = 33 - 11 = 22, w = 22 / 11 = 2
    names = ["x" + "_y" * k for k in range(1, 12)]
    toks, n_keys, _ = weights_of(tok, [(names[-1], {})], names)
    keyed = [(t, w) for t, w in toks if w != 1.0]
    assert n_keys == 11 and keyed == [("x", 2.0)] + [("_", 2.0)] * 10


def test_key_weight_is_non_key_over_key_inside_the_clips_one_key():
    tok = load_smollm2_tokenizer()
    # {"name": "get_weather", "arguments": {"city": "Paris"}} -> 18 tokens: ['{"', 'name', '":', ' "', 'get',
    #   '_', 'weather', '",', ' "', 'arguments', '":', ' {"', 'city', '":', ' "', 'Paris', '"', '}}']
    # (the list's '[' and ']' and the turn's '<|im_end|>', '\n' are outside the call);
    # K = {'get'}, |NK| = 18 - 1 = 17, w = 17 / 1 = 17 (strictly inside [1, 100])
    toks, n_keys, _ = weights_of(tok, [("get_weather", {"city": "Paris"})], ["get_weather", "search_flights"],
                                 max_weight=100.0)
    assert n_keys == 1 and [(t, w) for t, w in toks if w != 1.0] == [("get", 17.0)]
    # the upper clip is a clip, not a scale: between 17 and the default 9 it binds exactly at the bound
    toks, _, _ = weights_of(tok, [("get_weather", {"city": "Paris"})], ["get_weather"], max_weight=20.0)
    assert [(t, w) for t, w in toks if w != 1.0] == [("get", 17.0)]


def test_key_weight_with_several_keys_divides_the_other_tokens_by_their_number():
    tok = load_smollm2_tokenizer()
    # the same 18-token call; get_time shares 'get', '_' (diverges at 'weather'), getWeather shares 'get'
    # (diverges at '_'): K = {'get', '_', 'weather'}, |NK| = 18 - 3 = 15, w = 15 / 3 = 5 (inside [1, 9]).
    # Counting the keys into NK gives 6, the list brackets or the whole reply more, dividing by 1 gives 9.
    toks, n_keys, _ = weights_of(tok, [("get_weather", {"city": "Paris"})],
                                 ["get_weather", "get_time", "getWeather", "search_flights"])
    assert n_keys == 3
    assert [(t, w) for t, w in toks if w != 1.0] == [("get", 5.0), ("_", 5.0), ("weather", 5.0)]


def test_key_weight_is_per_call_in_parallel_calls():
    tok = load_smollm2_tokenizer()
    # [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"tz":
    # "CET"}}] call 1 -> 18 tokens: ['{"', 'name', '":', ' "', 'get', '_', 'weather', '",', ' "', 'arguments',
    # '":', ' {"', 'city', '":', ' "', 'Paris', '"}', '},']; K = {'get', 'weather'}, |NK| = 16, w = 16 / 2 = 8
    # call 2 -> 19 tokens: [' {"', 'name', '":', ' "', 'get', '_', 'time', '",', ' "', 'arguments', '":',
    #   ' {"', 'tz', '":', ' "', 'C', 'ET', '"', '}}']; K = {'get', 'time'}, |NK| = 17, w = 17 / 2 = 8.5
    # (a count over the whole reply would give both calls one weight)
    toks, n_keys, _ = weights_of(tok, [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})],
                                 ["get_weather", "get_time"])
    assert n_keys == 4
    assert [(t, w) for t, w in toks if w != 1.0] == [("get", 8.0), ("weather", 8.0), ("get", 8.5), ("time",
                                                                                                    8.5)]


# A gold name of 11 single-character tokens ['f', '0', '1', ..., '9'] and tools that diverge from it at every
# offset: f_x shares 'f' (diverges at '0'), f0x shares 'f', '0' (diverges at '1'), ..., f012345678x diverges
# at '9', and f01234567899 has the gold name as a prefix (its closing quote '",' is key): |K| = 1 + 10 + 1 =
# 12.
CLIP_GOLD = "f0123456789"
CLIP_TOOLS = [CLIP_GOLD, "f_x"] + [CLIP_GOLD[:i] + "x" for i in range(2,
                                                                      len(CLIP_GOLD) + 1)] + [CLIP_GOLD + "9"]
CLIP_KEYS = ["f", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", '",']


def test_the_clip_tools_key_every_name_token_and_the_closing_quote():
    tok = load_smollm2_tokenizer()
    # with a long enough call the weight shows which tokens are key:
    # {"name": "f0123456789", "arguments": {"q": "word word ... word "}} (10 words) -> 35 tokens: ['{"',
    # 'name', '":', ' "', 'f', '0', ..., '9', '",', ' "', 'arguments', '":', ' {"', 'q', '":', ' "', 'word',
    #   ' word' x 9, ' "', '}}'] = 4 + 11 + 1 + 7 + 10 + 2; |K| = 12, |NK| = 35 - 12 = 23, w = 23 / 12
    toks, n_keys, _ = weights_of(tok, [(CLIP_GOLD, {"q": "word " * 10})], CLIP_TOOLS)
    assert n_keys == 12
    assert [(t, w) for t, w in toks if w != 1.0] == [(t, 23 / 12) for t in CLIP_KEYS]


def test_key_weight_really_clips_at_1_when_key_tokens_outnumber_the_others():
    tok = load_smollm2_tokenizer()
    # {"name": "f0123456789", "arguments": {}} -> 21 tokens: ['{"', 'name', '":', ' "', 'f', '0', '1', '2',
    # '3', '4', '5', '6', '7', '8', '9', '",', ' "', 'arguments', '":', ' {}', '}]'] ('}]' straddles the
    # call's end, so it is the call's); the same 12 key tokens as above, |NK| = 21 - 12 = 9: 9 / 12 = 0.75 < 1
    unclipped = 9 / 12
    assert unclipped < 1
    toks, n_keys, _ = weights_of(tok, [(CLIP_GOLD, {})], CLIP_TOOLS)
    assert n_keys == 12  # the keys are there (the same tokens as in the test above) ...
    assert [t for t, _ in toks][5:17] == CLIP_KEYS  # after '[', '{"', 'name', '":', ' "'
    assert all(w == 1.0 for _, w in toks)  # ... and weigh clip(0.75, 1, 9) = 1, exactly


def test_parallel_calls_get_key_tokens_each():
    tok = load_smollm2_tokenizer()
    toks, n_keys, _ = weights_of(tok, [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})],
                                 ["get_weather", "get_time"])
    keyed = [t for t, w in toks if w != 1.0]
    assert keyed == ["get", "weather", "get", "time"] and n_keys == 4
