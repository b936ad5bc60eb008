// The transformers.js peer of `make bench`: AutoTokenizer +
// AutoModelForSequenceClassification on onnxruntime-node, scoring one job's
// (query, passage) pairs in batches, as the library's documentation shows.
// Usage: node bench.mjs MODEL_DIR JOB.json BATCH_SIZE  → prints "pairs_per_s: N"
import { readFileSync } from 'node:fs';
import { AutoTokenizer, AutoModelForSequenceClassification, env } from '@huggingface/transformers';

const [modelDir, jobPath, batchArg] = process.argv.slice(2);
const batch = Number(batchArg || 32);
env.allowRemoteModels = false;
env.allowLocalModels = true;

const job = JSON.parse(readFileSync(jobPath, 'utf8'));
const tokenizer = await AutoTokenizer.from_pretrained(modelDir, { local_files_only: true });
const model = await AutoModelForSequenceClassification.from_pretrained(modelDir, { local_files_only: true, dtype: 'fp32' });

async function scoreAll(candidates) {
  const scores = [];
  for (let i = 0; i < candidates.length; i += batch) {
    const chunk = candidates.slice(i, i + batch);
    const inputs = tokenizer(chunk.map(() => job.query), {
      text_pair: chunk.map((c) => c.text), padding: true, truncation: true, max_length: 512,
    });
    const { logits } = await model(inputs);
    scores.push(...logits.data);
  }
  return scores;
}

await scoreAll(job.candidates.slice(0, batch)); // warm-up: our side's session is warm too
const start = process.hrtime.bigint();
const scores = await scoreAll(job.candidates);
const secs = Number(process.hrtime.bigint() - start) / 1e9;
if (scores.length !== job.candidates.length) throw new Error(`got ${scores.length} scores`);
console.log(`pairs_per_s: ${(job.candidates.length / secs).toFixed(3)}`);
