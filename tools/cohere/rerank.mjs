// Re-ranks one list through the rerank HTTP gateway with the official
// Cohere SDK (v1 and v2 clients) and prints what the SDK returned, as JSON:
//   node rerank.mjs URL TOKEN MODEL < {"query": "...", "documents": ["..."]}
import { CohereClient, CohereClientV2 } from "cohere-ai";

const [url, token, model] = process.argv.slice(2);
const input = JSON.parse(await new Promise((resolve) => {
  let s = "";
  process.stdin.on("data", (d) => (s += d));
  process.stdin.on("end", () => resolve(s));
}));
const v1 = new CohereClient({ token, environment: url });
const v2 = new CohereClientV2({ token, environment: url });
const r1 = await v1.rerank({ model, query: input.query, documents: input.documents, topN: input.documents.length, returnDocuments: true });
const r2 = await v2.rerank({ model, query: input.query, documents: input.documents });
let denied = null;
try {
  await new CohereClient({ token: "not-the-token", environment: url }).rerank({ model, query: input.query, documents: input.documents });
} catch (e) {
  denied = e.statusCode ?? String(e);
}
console.log(JSON.stringify({
  v1: r1.results.map((r) => ({ index: r.index, score: r.relevanceScore, text: r.document?.text })),
  v2: r2.results.map((r) => ({ index: r.index, score: r.relevanceScore })),
  id: r1.id,
  denied,
}));
