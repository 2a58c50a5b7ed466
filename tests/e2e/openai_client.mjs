// tests/e2e/openai_client.mjs: drives a baton server with the official, unmodified `openai`
// npm client (installed by tests/e2e/test_openai.sh). Chat and completions, streaming and not,
// temperature 0; checks content, finish_reason, usage, and that the greedy tokens equal the
// tiny-a fixture reference (llama.cpp's greedy continuation of prompts/chat.ids).
//   node openai_client.mjs BASE_URL CHAT_IDS_FILE GREEDY_FILE
// Prints one "ok: ..." line per check; exits 1 at the first failure.
import fs from 'node:fs';
import OpenAI from 'openai';

const [baseURL, idsFile, greedyFile] = process.argv.slice(2);
const readIds = (f) => fs.readFileSync(f, 'utf8').trim().split(/\s+/).map(Number);
const promptIds = readIds(idsFile);
const greedy = readIds(greedyFile);
const N = greedy.length;
const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey: 'none', maxRetries: 0, timeout: 60000 });

function check(cond, what, detail) {
  if (!cond) {
    console.error(`FAIL: ${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
    process.exit(1);
  }
}
const same = (a, b) => Array.isArray(a) && a.length === b.length && a.every((x, i) => x === b[i]);
const ok = (m) => console.log('ok: ' + m);

// the chat prompt of the fixture, as messages (the server renders the same 43 ids)
const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Write a short poem about the sea and the wind.' },
];

const models = await client.models.list();
const model = models.data[0]?.id;
check(typeof model === 'string' && model.length > 0, 'models.list gives a model id', models.data);
ok(`models.list: ${model}`);

// 1. completions, prompt as token ids: exact tokens vs the reference
const c1 = await client.completions.create({
  model, prompt: promptIds, max_tokens: N, temperature: 0, return_token_ids: true,
});
check(c1.object === 'text_completion', 'completion object', c1.object);
check(c1.choices.length === 1 && c1.choices[0].text.length > 0, 'completion text non-empty', c1.choices);
check(c1.choices[0].finish_reason === 'length', 'completion finish_reason length', c1.choices[0].finish_reason);
check(c1.usage && c1.usage.prompt_tokens === promptIds.length && c1.usage.completion_tokens === N,
  'completion usage', c1.usage);
check(same(c1.choices[0].token_ids, greedy), 'completion greedy ids == reference',
  { got: c1.choices[0].token_ids, want: greedy });
ok(`completions (ids prompt, non-streaming): ${N} greedy tokens equal the reference`);

// 2. the same, streamed: text and ids arrive in pieces and add up to the same
const s1 = await client.completions.create({
  model, prompt: promptIds, max_tokens: N, temperature: 0, stream: true,
  stream_options: { include_usage: true }, return_token_ids: true,
});
let text = '', ids = [], finish = null, usage = null, chunks = 0;
for await (const ch of s1) {
  chunks++;
  if (ch.usage) usage = ch.usage;
  for (const c of ch.choices) {
    text += c.text ?? '';
    if (c.token_ids) ids.push(...c.token_ids);
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check(chunks > 2, 'completion stream has several chunks', chunks);
check(text === c1.choices[0].text, 'streamed completion text == non-streamed', { text, want: c1.choices[0].text });
check(same(ids, greedy), 'streamed completion ids == reference', ids);
check(finish === 'length', 'streamed completion finish_reason', finish);
check(usage && usage.completion_tokens === N, 'streamed completion usage', usage);
ok(`completions (streaming): ${chunks} chunks, same text and ids`);

// 3. chat, non-streaming: the rendered prompt is the fixture's, so are the tokens
const r1 = await client.chat.completions.create({
  model, messages, max_tokens: N, temperature: 0, return_token_ids: true,
});
check(r1.object === 'chat.completion', 'chat object', r1.object);
const m1 = r1.choices[0].message;
check(m1.role === 'assistant' && typeof m1.content === 'string' && m1.content.length > 0,
  'chat content non-empty', m1);
check(r1.choices[0].finish_reason === 'length', 'chat finish_reason', r1.choices[0].finish_reason);
check(r1.usage && r1.usage.prompt_tokens === promptIds.length && r1.usage.completion_tokens === N &&
  r1.usage.total_tokens === promptIds.length + N, 'chat usage', r1.usage);
check(same(r1.prompt_token_ids, promptIds), 'chat prompt ids == prompts/chat.ids', r1.prompt_token_ids);
check(same(r1.choices[0].token_ids, greedy), 'chat greedy ids == reference', r1.choices[0].token_ids);
ok(`chat (non-streaming): prompt renders to chat.ids, ${N} greedy tokens equal the reference`);

// 4. chat, streaming
const s2 = await client.chat.completions.create({
  model, messages, max_tokens: N, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let ctext = '', role = null, cfinish = null, cusage = null, cchunks = 0;
for await (const ch of s2) {
  cchunks++;
  if (ch.usage) cusage = ch.usage;
  for (const c of ch.choices) {
    if (c.delta.role) role = c.delta.role;
    ctext += c.delta.content ?? '';
    if (c.finish_reason) cfinish = c.finish_reason;
  }
}
check(role === 'assistant', 'chat stream role', role);
check(ctext === m1.content, 'streamed chat text == non-streamed', { ctext, want: m1.content });
check(cfinish === 'length', 'streamed chat finish_reason', cfinish);
check(cusage && cusage.prompt_tokens === promptIds.length && cusage.completion_tokens === N,
  'streamed chat usage', cusage);
ok(`chat (streaming): ${cchunks} chunks, same text`);

// 5. a text prompt, sampled, with a stop at a natural end (max_tokens small)
const c2 = await client.completions.create({ model, prompt: 'The sea and the wind', max_tokens: 8, temperature: 0.8, seed: 3 });
check(c2.choices[0].text.length > 0 && ['length', 'stop'].includes(c2.choices[0].finish_reason),
  'sampled text completion', c2.choices[0]);
check(c2.usage.completion_tokens >= 1 && c2.usage.completion_tokens <= 8, 'sampled usage', c2.usage);
ok(`completions (text prompt, sampled): ${JSON.stringify(c2.choices[0].text)}`);

// 6. errors reach the client as its typed errors
try {
  await client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 4 });
  check(false, 'unknown model must fail');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError && e.status === 404, 'unknown model -> NotFoundError 404', { name: e.name, status: e.status });
  ok(`unknown model: ${e.status} ${e.message}`);
}
try {
  await client.completions.create({ model, prompt: 'x', max_tokens: -1 });
  check(false, 'negative max_tokens must fail');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.status === 400, 'max_tokens -1 -> BadRequestError 400', { name: e.name, status: e.status });
  ok(`negative max_tokens: ${e.status}`);
}
console.log('openai client: all checks passed');
