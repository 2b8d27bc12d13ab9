// The official `openai` npm package calling the gateway, as a JavaScript app would.
//
// Env: GATEWAY_BASE_URL (the gateway's /v1 URL), GATEWAY_MODEL (a route or model id).
// Prints one JSON object describing what the client saw; tests/e2e/test_js_client.py
// asserts on it. Exits non-zero only when something unexpected was thrown.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.GATEWAY_BASE_URL,
  apiKey: process.env.GATEWAY_API_KEY || "sk-js-check",
  maxRetries: 0,
  timeout: 30_000,
});
const model = process.env.GATEWAY_MODEL || "auto";
const messages = [{ role: "user", content: "Say hello." }];

async function nonStream() {
  const { data, response } = await client.chat.completions.create({ model, messages, temperature: 0.2 }).withResponse();
  return {
    object: data.object,
    content: data.choices[0].message.content,
    finish_reason: data.choices[0].finish_reason,
    usage: data.usage,
    backend: response.headers.get("x-gateway-backend"),
    request_id: response.headers.get("x-request-id"),
  };
}

async function stream(includeUsage) {
  const options = { model, messages, stream: true };
  if (includeUsage) options.stream_options = { include_usage: true };
  const chunks = [];
  for await (const chunk of await client.chat.completions.create(options)) chunks.push(chunk);
  const last = chunks[chunks.length - 1];
  return {
    chunks: chunks.length,
    text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
    finish_reasons: chunks.flatMap((c) => c.choices.map((choice) => choice.finish_reason)).filter(Boolean),
    last_choices: last.choices.length,
    usage: last.usage ?? null,
    chunks_with_usage: chunks.filter((c) => c.usage).length,
  };
}

async function failure(request) {
  try {
    await client.chat.completions.create(request);
    return { thrown: false };
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) throw err;
    return {
      thrown: true,
      class: err.constructor.name,
      status: err.status,
      code: err.code ?? null,
      type: err.type ?? null,
      param: err.param ?? null,
      message: err.message,
    };
  }
}

try {
  const report = {
    non_stream: await nonStream(),
    stream_with_usage: await stream(true),
    stream_without_usage: await stream(false),
    unknown_model: await failure({ model: "nobody/no-such-model", messages }),
    missing_messages: await failure({ model }),
  };
  process.stdout.write(JSON.stringify(report) + "\n");
} catch (err) {
  process.stdout.write(JSON.stringify({ fatal: String(err?.stack ?? err) }) + "\n");
  process.exit(1);
}
