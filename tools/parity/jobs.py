# Writes jobs.json, the parity jobs: unicode, accents, CJK, right-to-left
# scripts, emoji, control characters, literal special tokens, passages over
# 512 tokens (seeded random words), and BM25 scores on both sides of 50.
# python3 jobs.py  (from this folder; the output is committed)
import json, random
random.seed(7)
words = ("the quick brown fox jumps over a lazy dog while search engines rank passages by relevance "
 "to queries about cities rivers mountains history science music food travel weather sport health finance "
 "law art language computers networks storage queues streams workers résumé naïve café über straße "
 "東京 北京 中国 مرحبا Привет antidisestablishmentarianism e-mail 3.14159 $50 €20").split()
def passage(n):
    return " ".join(random.choice(words) for _ in range(n))
jobs = []
jobs.append({"id": "unicode", "query": "Café crème brûlée — ¿qué es? ÉCOLE Straße",
  "candidates": [
    {"id": "accents", "text": "Crème brûlée is a French dessert: naïve façade, coöperate, rôle, ﬁ ﬂ ligatures.", "bm25": 12.4},
    {"id": "cjk", "text": "東京タワーの高さは333メートルです。北京 is the capital of 中国. 한국어 텍스트.", "bm25": 73.5},
    {"id": "rtl", "text": "مرحبا بالعالم — Привет мир, как дела? हिन्दी भाषा", "bm25": 250},
    {"id": "emoji", "text": "emoji 🙂🚀 test ✓ ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ and zero\u200bwidth\u00adsoft\u200djoiner", "bm25": 0},
    {"id": "negative", "text": "A negative first-stage score still injects as text.", "bm25": -1.5}]})
jobs.append({"id": "control", "query": "control\tcharacters\nin the query\u0007",
  "candidates": [
    {"id": "nul", "text": "nul\u0000byte and bell\u0007 and escape \u001b[31mred\u001b[0m", "bm25": 5.5},
    {"id": "ws", "text": "tab\there\nnewline\r\nwindows line\u2028separator\u00a0nbsp", "bm25": 49.999999},
    {"id": "sep", "text": "a passage with a literal [SEP] and [CLS] and [MASK] inside", "bm25": 50},
    {"id": "del", "text": "delete\u007f and c1\u0085 controls", "bm25": 50.5}]})
jobs.append({"id": "long", "query": "what do long passages over the position limit do to " + passage(70),
  "candidates": [{"id": "long-%d" % i, "text": passage(420 + 90 * i), "bm25": 8.25 * (i + 1)} for i in range(4)]})
jobs.append({"id": "scores", "query": "bm25 scores above fifty",
  "candidates": [{"id": "s%d" % i, "text": passage(12 + i), "bm25": s} for i, s in enumerate([0, 0.5, 10, 24.99, 33.333, 49.99, 50, 51, 64.2, 99.99, 100, 120.75])]})
json.dump(jobs, open("jobs.json", "w"), ensure_ascii=False, indent=1)
