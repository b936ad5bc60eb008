// make parity: scores the jobs in jobs.json with `rerank run` and with an
// independent JavaScript reference, and checks the injection golden files
// of inject/testdata against the reference's own injection text.
//
// The reference shares no code with rerank:
//   - injection: written from the paper's description and the authors' code
//     (text A = str(int(((s - min) / (max - min)) * 100)) + " [SEP] " + query),
//     with Python's int() and f"{x:.{d}f}" formatting (round half to even on
//     the exact binary value; JavaScript's toFixed rounds ties up);
//   - tokenization: transformers.js AutoTokenizer on the model's
//     tokenizer.json, each text encoded alone and truncated with the Hugging
//     Face tokenizers (Rust) pair rules. transformers.js' own pair
//     truncation cuts the joined sequence at the end (dropping the final
//     [SEP]), which is not what Python does, so it is not used;
//   - inference: onnxruntime-node 1.29.0 on the same model.onnx, one pair
//     per run (no padding), and the activation sentence-transformers'
//     CrossEncoder.predict would apply for the export's config.json.
//
// Usage: node parity.mjs --rerank BIN --model DIR --jobs JOBS.json --golden DIR [--ort-lib LIB]
// Prints one summary line and exits 1 on any mismatch.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { AutoTokenizer, env } from '@huggingface/transformers';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
for (const need of ['rerank', 'model', 'jobs', 'golden']) {
  if (!args[need]) throw new Error(`--${need} is required`);
}
env.allowRemoteModels = false;
env.allowLocalModels = true;

const TOL = 1e-4;
const PRESETS = ['ms-marco-MiniLM', 'all-MiniLM-L12-v3-bm25', 'bm25cat-paper'];
const MAX_LENGTHS = [512, 128];

// ---- injection --------------------------------------------------------------

// The presets, as the paper and the authors' code define them.
const PRESET_DEFS = {
  'ms-marco-MiniLM': { a: '{query}', b: '{passage}', scores: {} },
  'all-MiniLM-L12-v2.1-bm25added': { a: '{query}', b: '{passage}', scores: {} },
  'all-MiniLM-L12-v3-bm25': { a: '{bm25} [SEP] {query}', b: '{passage}', scores: { bm25: { normalization: 'global_minmax', min: 0, max: 50, scale: 100, format: 'int' } } },
  'bm25cat-paper': { a: '{query} [SEP] {bm25}', b: '{passage}', scores: { bm25: { normalization: 'global_minmax', min: 0, max: 50, scale: 100, format: 'int' } } },
  'all-MiniLM-L12-v3-dpr': { a: '{dpr} [SEP] {query}', b: '{passage}', scores: { dpr: { normalization: 'global_minmax', scale: 100, format: 'int' } } },
  'all-MiniLM-L12-v3-bm25dpr': { a: '{bm25} [SEP] {dpr} [SEP] {query}', b: '{passage}', scores: { bm25: { normalization: 'global_minmax', min: 0, max: 50, scale: 100, format: 'int' }, dpr: { normalization: 'global_minmax', scale: 100, format: 'int' } } },
};

// Python's str(int(x)): truncation toward zero, every digit, no "-0".
function pyInt(x) {
  const t = Math.trunc(x);
  return t === 0 ? '0' : BigInt(t).toString();
}

// Python's f"{x:.{d}f}": the exact binary value rounded half to even.
function pyFixed(x, d) {
  const neg = x < 0 || Object.is(x, -0);
  const exact = Math.abs(x).toFixed(100); // exact for every value whose rounding can tie
  const [ip, fp] = exact.split('.');
  let digits = ip + fp.slice(0, d);
  const rest = fp.slice(d);
  let up = rest[0] > '5' || (rest[0] === '5' && /[1-9]/.test(rest.slice(1)));
  if (rest[0] === '5' && !/[1-9]/.test(rest.slice(1))) up = Number(digits[digits.length - 1]) % 2 === 1;
  if (up) {
    const arr = digits.split('').map(Number);
    let i = arr.length - 1;
    while (i >= 0 && arr[i] === 9) { arr[i] = 0; i--; }
    if (i < 0) arr.unshift(1); else arr[i]++;
    digits = arr.join('');
  }
  const intLen = digits.length - d;
  const out = d > 0 ? `${digits.slice(0, intLen)}.${digits.slice(intLen)}` : digits;
  return (neg ? '-' : '') + out.replace(/^0+(?=\d)/, '');
}

function normalize(spec, raw) {
  const scale = spec.scale ?? (['global_minmax', 'local_minmax', 'sum'].includes(spec.normalization) ? 100 : 1);
  const n = raw.length;
  switch (spec.normalization) {
    case 'none': return raw.map((x) => x * scale);
    case 'global_minmax': return raw.map((x) => ((x - spec.min) / (spec.max - spec.min)) * scale);
    case 'local_minmax': {
      const lo = Math.min(...raw), hi = Math.max(...raw);
      return hi > lo ? raw.map((x) => ((x - lo) / (hi - lo)) * scale) : raw.map(() => 0);
    }
    case 'global_zscore': return raw.map((x) => ((x - spec.mean) / spec.std) * scale);
    case 'local_zscore': {
      let sum = 0; for (const x of raw) sum += x;
      const mean = sum / n;
      let ss = 0; for (const x of raw) ss += (x - mean) * (x - mean);
      const std = Math.sqrt(ss / n);
      return std > 0 ? raw.map((x) => ((x - mean) / std) * scale) : raw.map(() => 0);
    }
    case 'sum': {
      let sum = 0; for (const x of raw) sum += x;
      return sum !== 0 ? raw.map((x) => (x / sum) * scale) : raw.map(() => 0);
    }
  }
  throw new Error(`unknown normalization ${spec.normalization}`);
}

// inject renders (text A, text B) per candidate, or returns a coded error.
function inject(presetName, overrides, job) {
  const def = structuredClone(PRESET_DEFS[presetName]);
  for (const [name, o] of Object.entries(overrides?.scores ?? {})) def.scores[name] = { ...def.scores[name], ...o };
  const needs = (name) => def.a.includes(`{${name}}`) || def.b.includes(`{${name}}`);
  const text = {};
  for (const name of ['bm25', 'dpr']) {
    if (!needs(name)) continue;
    const raw = [];
    for (const [i, c] of job.candidates.entries()) {
      if (c[name] === undefined || c[name] === null) return { error: { code: 'missing_score', candidate: { index: i, id: c.id } } };
      raw.push(c[name]);
    }
    const spec = def.scores[name];
    text[name] = normalize(spec, raw).map((v) => (spec.format === 'float' ? pyFixed(v, spec.decimals ?? 0) : pyInt(v)));
  }
  const render = (tpl, i, c) => tpl.replace(/\{(query|passage|bm25|dpr)\}/g, (_, k) =>
    k === 'query' ? job.query : k === 'passage' ? c.text : text[k][i]);
  return { pairs: job.candidates.map((c, i) => ({ a: render(def.a, i, c), b: render(def.b, i, c) })) };
}

// ---- tokenization and scoring -------------------------------------------------

// The Rust tokenizers crate's pair truncation (tokenizers/src/utils/truncation.rs).
function truncate(n1, n2, max, strategy) {
  if (n1 + n2 <= max) return [n1, n2];
  if (strategy === 'only_second') {
    const keep = n2 - (n1 + n2 - max);
    if (keep <= 0) throw new Error('sequence to truncate too short');
    return [n1, keep];
  }
  let a = n1, b = n2, swap = false;
  if (a > b) { [a, b] = [b, a]; swap = true; }
  b = a > max ? a : Math.max(a, max - a);
  if (a + b > max) { a = Math.floor(max / 2); b = a + (max % 2); }
  return swap ? [b, a] : [a, b];
}

function activationOf(config) {
  const fn = (config.sentence_transformers?.activation_fn ?? '').toLowerCase();
  if (fn.endsWith('.identity')) return 'none';
  if (fn.endsWith('.sigmoid')) return 'sigmoid';
  if (fn.endsWith('.softmax')) return 'softmax';
  const labels = config.num_labels ?? Object.keys(config.id2label ?? { 0: 'LABEL_0' }).length;
  return labels >= 2 ? 'softmax' : 'sigmoid';
}

async function openModel(dir) {
  const tokenizer = await AutoTokenizer.from_pretrained(dir, { local_files_only: true });
  const graph = fs.existsSync(path.join(dir, 'model.onnx')) ? path.join(dir, 'model.onnx') : path.join(dir, 'onnx', 'model.onnx');
  const session = await ort.InferenceSession.create(graph, { intraOpNumThreads: 1 });
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')).model.vocab;
  return { tokenizer, session, activation: activationOf(config), cls: vocab['[CLS]'], sep: vocab['[SEP]'] };
}

async function score(m, a, b, maxLength) {
  const ea = m.tokenizer.encode(a, { add_special_tokens: false });
  const eb = m.tokenizer.encode(b, { add_special_tokens: false });
  const [n1, n2] = truncate(ea.length, eb.length, maxLength - 3, 'longest_first');
  const ids = [m.cls, ...ea.slice(0, n1), m.sep, ...eb.slice(0, n2), m.sep];
  const types = ids.map((_, i) => (i < n1 + 2 ? 0 : 1));
  const t = (xs) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), [1, xs.length]);
  const feeds = { input_ids: t(ids), attention_mask: t(ids.map(() => 1)) };
  if (m.session.inputNames.includes('token_type_ids')) feeds.token_type_ids = t(types);
  const out = await m.session.run(feeds);
  const logits = Array.from(out[m.session.outputNames[0]].data);
  const k = logits.length === 2 ? 1 : 0;
  switch (m.activation) {
    case 'sigmoid': return 1 / (1 + Math.exp(-logits[k]));
    case 'softmax': {
      const hi = Math.max(...logits);
      const sum = logits.reduce((s, l) => s + Math.exp(l - hi), 0);
      return Math.exp(logits[k] - hi) / sum;
    }
  }
  return logits[k];
}

// Best first; ties keep candidate order (the contract's rule).
const ranking = (scores) => scores.map((s, i) => [s, i]).sort((x, y) => y[0] - x[0] || x[1] - y[1]).map(([, i]) => i);

// ---- the checks ---------------------------------------------------------------

const problems = [];

// 1. Golden files: the reference's injection text, line for line.
const cases = JSON.parse(fs.readFileSync(path.join(args.golden, 'cases.json'), 'utf8'));
let goldenChecked = 0;
for (const c of cases) {
  const want = fs.readFileSync(path.join(args.golden, `${c.name}.golden`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const got = inject(c.preset, c.overrides, c.job);
  goldenChecked++;
  if (got.error) {
    if (want.length !== 1 || want[0].code !== got.error.code || want[0].candidate?.index !== got.error.candidate.index) {
      problems.push(`golden ${c.name}: the reference says ${JSON.stringify(got.error)}, the golden file ${JSON.stringify(want)}`);
    }
    continue;
  }
  got.pairs.forEach((p, i) => {
    const w = want[i];
    if (!w || w.index !== i || w.id !== c.job.candidates[i].id || w.text_a !== p.a || w.text_b !== p.b) {
      problems.push(`golden ${c.name} line ${i}: reference ${JSON.stringify(p)}, golden ${JSON.stringify(w)}`);
    }
  });
  if (want.length !== got.pairs.length) problems.push(`golden ${c.name}: ${want.length} lines for ${got.pairs.length} candidates`);
}

// 2. Scores: rerank run against the reference, per preset and max length.
const jobs = JSON.parse(fs.readFileSync(args.jobs, 'utf8'));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'rerank-parity-'));
let configs = 0, pairs = 0, maxDiff = 0, scoreMismatches = 0, rankingMismatches = 0;
try {
  for (const preset of PRESETS) {
    for (const maxLength of MAX_LENGTHS) {
      configs++;
      const dir = path.join(work, `${preset}-${maxLength}`);
      fs.mkdirSync(dir);
      for (const f of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'config.json']) {
        fs.symlinkSync(path.resolve(args.model, f), path.join(dir, f));
      }
      fs.writeFileSync(path.join(dir, 'rerank.json'), JSON.stringify({ preset, max_length: maxLength }));
      const m = await openModel(dir);
      for (const job of jobs) {
        const jobPath = path.join(work, `${job.id}.json`);
        fs.writeFileSync(jobPath, JSON.stringify(job));
        const runArgs = ['run', '--model', `parity=${dir}`, '--intra-op-threads', '1'];
        if (args['ort-lib']) runArgs.push('--ort-lib', args['ort-lib']);
        runArgs.push(jobPath);
        let out;
        try {
          out = execFileSync(args.rerank, runArgs, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
        } catch (e) {
          out = e.stdout || '{"error":' + JSON.stringify(String(e.stderr || e.message)) + '}';
        }
        const res = JSON.parse(out);
        if (res.error) { problems.push(`${preset}/${maxLength}/${job.id}: rerank run failed: ${JSON.stringify(res.error)}`); continue; }
        const ours = new Array(job.candidates.length);
        for (const r of res.results) ours[r.index] = r.relevance_score;
        const inj = inject(preset, null, job);
        const ref = [];
        for (const p of inj.pairs) ref.push(await score(m, p.a, p.b, maxLength));
        pairs += ref.length;
        ref.forEach((r, i) => {
          const d = Math.abs(r - ours[i]);
          maxDiff = Math.max(maxDiff, d);
          if (!(d <= TOL)) {
            scoreMismatches++;
            problems.push(`${preset}/${maxLength}/${job.id}/${job.candidates[i].id}: rerank ${ours[i]}, reference ${r} (|Δ| ${d.toExponential(2)})`);
          }
        });
        const a = ranking(ours).join(','), b = ranking(ref).join(',');
        if (a !== b) {
          rankingMismatches++;
          problems.push(`${preset}/${maxLength}/${job.id}: ranking ${a}, reference ${b}`);
        }
      }
      await m.session.release();
    }
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

for (const p of problems.slice(0, 30)) console.error(p);
if (problems.length > 30) console.error(`... and ${problems.length - 30} more`);
const ok = problems.length === 0;
console.log(`parity: ${ok ? 'PASS' : 'FAIL'} configs=${configs} jobs=${jobs.length} pairs=${pairs} max_abs_diff=${maxDiff.toExponential(2)} ` +
  `score_mismatches=${scoreMismatches} ranking_mismatches=${rankingMismatches} golden_files=${goldenChecked} golden_mismatches=${problems.length - scoreMismatches - rankingMismatches}`);
process.exit(ok ? 0 : 1);
