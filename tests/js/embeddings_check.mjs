// The official `openai` npm package asking for embeddings, as a JavaScript RAG indexer would.
//
// Env: GATEWAY_BASE_URL (the gateway's /v1 URL), GATEWAY_MODEL (an embedding route or model).
// Prints one JSON object: the vectors the client got, with the SDK's default encoding (it
// asks for base64 and decodes it) and with `encoding_format: "float"`.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.GATEWAY_BASE_URL,
  apiKey: process.env.GATEWAY_API_KEY || "sk-js-check",
  maxRetries: 0,
  timeout: 30_000,
});
const model = process.env.GATEWAY_MODEL || "embed";
const input = ["a cat", "a dog"];

const vectors = (answer) => answer.data.map((d) => Array.from(d.embedding));
const byDefault = await client.embeddings.create({ model, input });
const floats = await client.embeddings.create({ model, input, encoding_format: "float" });
console.log(JSON.stringify({ default: vectors(byDefault), float: vectors(floats), usage: byDefault.usage }));
