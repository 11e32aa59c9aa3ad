// Runs calls through the official `openai` npm package against infernode's HTTP API and prints
// what the client saw as JSON, one result per call, so that the Python driver compares them.
//
//   node openai_client.mjs CALLS.json      (OPENAI_NODE_MODULES: where `npm install openai` put it)
//
// HTTPS servers are trusted through NODE_EXTRA_CA_CERTS.
// CALLS.json: {"base_url", "api_key", "calls": [{"api": "completions" |
// "chat", "stream": bool, "params": {...}}]}. A result: {"ok": true, "choices": {index: {"text",
// "finish_reason"}}, "usage", "chunks", "ids"} or {"ok": false, "status", "error"}.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(process.env.OPENAI_NODE_MODULES.replace(/\/?$/, '/'));
const openaiModule = require('openai');
const OpenAI = openaiModule.OpenAI ?? openaiModule.default ?? openaiModule;

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const options = { baseURL: spec.base_url, apiKey: spec.api_key ?? 'none', maxRetries: 0, timeout: 120000 };
const client = new OpenAI(options);

function collect(choices, chunk, chat) {
  for (const c of chunk.choices ?? []) {
    const slot = (choices[c.index] ??= { text: '', finish_reason: null, role: null, lp_tokens: [] });
    if (c.logprobs) slot.lp_tokens.push(...(chat ? c.logprobs.content.map((t) => t.token) : c.logprobs.tokens));
    if (chat) {
      slot.text += c.delta?.content ?? '';
      if (c.delta?.role) slot.role = c.delta.role;
    } else {
      slot.text += c.text ?? '';
    }
    if (c.finish_reason) slot.finish_reason = c.finish_reason;
  }
}

async function run(call) {
  const chat = call.api === 'chat';
  const create = chat ? (p) => client.chat.completions.create(p) : (p) => client.completions.create(p);
  const params = { model: spec.model ?? 'infernode', ...call.params, stream: !!call.stream };
  try {
    if (!call.stream) {
      const r = await create(params);
      const choices = {};
      for (const c of r.choices)
        choices[c.index] = { text: chat ? c.message.content : c.text, finish_reason: c.finish_reason,
                             role: chat ? c.message.role : null, logprobs: c.logprobs ?? null };
      return { ok: true, object: r.object, choices, usage: r.usage, session_id: r.session_id ?? null };
    }
    const stream = await create(params);
    const choices = {};
    let usage = null, chunks = 0, object = null, session = null;
    for await (const chunk of stream) {
      chunks++;
      object = chunk.object;
      if (chunk.usage) usage = chunk.usage;
      if (chunk.session_id) session = chunk.session_id;
      collect(choices, chunk, chat);
    }
    return { ok: true, object, choices, usage, chunks, session_id: session };
  } catch (e) {
    return { ok: false, status: e.status ?? null, error: e.error ?? String(e) };
  }
}

const results = [];
for (const call of spec.calls) results.push(await run(call));
process.stdout.write(JSON.stringify(results));
