// A placement.v1 client in another language, built from the .proto alone
// (plus the standard health.proto), with grpc-js's default call options: no
// deadlines, no retries. It drives a running server through the contract the
// .proto documents and checks every answer; any mismatch exits 1 with a
// message naming the check.
//
//   node tests/node/client.js HOST:PORT      (admin token: $PLACEMENT_ADMIN_TOKEN)
'use strict';

const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.resolve(__dirname, '..', '..');
const LOAD_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };
const YEAR_1970 = { seconds: 86400, nanos: 0 };
const YEAR_9999 = { seconds: 253370764800, nanos: 0 };

function load() {
  const placement = protoLoader.loadSync('placement/v1/placement.proto',
    { ...LOAD_OPTIONS, includeDirs: [path.join(ROOT, 'proto')] });
  const health = protoLoader.loadSync('grpc/health/v1/health.proto', { ...LOAD_OPTIONS, includeDirs: [__dirname] });
  return { ...grpc.loadPackageDefinition(placement).placement.v1, health: grpc.loadPackageDefinition(health).grpc.health.v1 };
}

class Mismatch extends Error {}

function check(condition, what, detail) {
  if (!condition) throw new Mismatch(`${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
}

// A unary call as a promise; `metadata` only where the contract asks for it.
function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const done = (err, response) => (err ? reject(err) : resolve(response));
    if (metadata) client[method](request, metadata, done); else client[method](request, done);
  });
}

async function refused(promise, code, fragment, what) {
  try {
    await promise;
  } catch (err) {
    check(err.code === code, `${what}: status`, { expected: grpc.status[code], got: grpc.status[err.code], details: err.details });
    check(err.details.includes(fragment), `${what}: message names the problem`, { expected: fragment, got: err.details });
    return;
  }
  throw new Mismatch(`${what}: answered OK, expected ${grpc.status[code]}`);
}

const features = (groups) => Object.entries(groups).map(([name, feats]) => ({
  name,
  features: Object.entries(feats).map(([f, v]) => (typeof v === 'string' ? { name: f, category: v } : { name: f, number: v })),
}));

const decideRequest = (slots, extra = {}) => ({
  context: features({ customer: { segment: 'student', recency: 0.2 } }),
  slots: slots.map((id) => ({ id, groups: features({ position: { above_fold: id === 'homepage' ? 1 : 0 } }) })),
  ...extra,
});

function checkDecision(response, slots, what) {
  check(response.event_id.length > 0, `${what}: event_id is set`);
  check(response.slots.length === slots.length, `${what}: one answer per slot`, response.slots.length);
  check(String(response.model_version_number) === response.model_version, `${what}: version fields agree`,
    [response.model_version, response.model_version_number]);
  const chosen = new Set();
  response.slots.forEach((s, k) => {
    check(s.slot_id === slots[k], `${what}: slots in request order`, [s.slot_id, slots[k]]);
    check(!chosen.has(s.collection_id), `${what}: a collection at most once`, s.collection_id);
    chosen.add(s.collection_id);
    check(s.probability > 0 && s.probability <= 1, `${what}: propensity in (0, 1]`, s.probability);
    const total = s.ranking.reduce((sum, r) => sum + r.probability, 0);
    check(Math.abs(total - 1) < 1e-6, `${what}: ranking probabilities sum to 1`, total);
    check(s.ranking.every((r, i) => i === 0 || s.ranking[i - 1].probability >= r.probability), `${what}: ranking most probable first`);
    const ranked = s.ranking.find((r) => r.collection_id === s.collection_id);
    check(ranked && Math.abs(ranked.probability - s.probability) < 1e-9, `${what}: chosen collection ranked with its propensity`);
  });
  return response;
}

async function catalog(admin, auth) {
  const collections = [
    { id: 'back-to-school', groups: features({ collection: { kind: 'seasonal' } }), title: 'Back to School',
      eligible_slots: ['homepage', 'email'] },
    { id: 'mothers-day', groups: features({ collection: { kind: 'seasonal', price: 30.5 } }), title: "Mother's Day" },
    { id: 'internet-famous', groups: features({ collection: { kind: 'trending' } }), title: 'Internet Famous' },
    { id: 'gift-guide', groups: features({ collection: { kind: 'evergreen' } }), title: 'Gift Guide' },
    { id: 'email-only', groups: features({ collection: { kind: 'newsletter' } }), eligible_slots: ['email'] },
    { id: 'expired', groups: features({ collection: { kind: 'old' } }), active_until: YEAR_1970 },
  ];
  await refused(call(admin, 'PutCollections', { collections }), grpc.status.UNAUTHENTICATED, 'authorization',
    'PutCollections without the bearer token');
  const put = await call(admin, 'PutCollections', { collections }, auth);
  check(put.stored === collections.length && put.catalog_version > 0, 'PutCollections answer', put);
  const listed = await call(admin, 'ListCollections', {}, auth);
  check(listed.catalog_version === put.catalog_version, 'ListCollections sees the acknowledged change', listed.catalog_version);
  const ids = listed.collections.map((c) => c.id);
  check(collections.every((c) => ids.includes(c.id)), 'ListCollections lists every collection', ids);
  const email = listed.collections.find((c) => c.id === 'email-only');
  check(email.eligible_slots.join() === 'email', 'ListCollections keeps eligible_slots', email.eligible_slots);
  await refused(call(admin, 'PutCollections', { collections: [{ id: '_label', groups: collections[0].groups }] }, auth),
    grpc.status.INVALID_ARGUMENT, "'_label'", 'PutCollections with a name against the naming rule');
}

async function decisions(service) {
  const one = checkDecision(await call(service, 'Decide', decideRequest(['homepage'])), ['homepage'], 'Decide, 1 slot');
  const offered = one.slots[0].ranking.map((r) => r.collection_id);
  check(!offered.includes('email-only') && !offered.includes('expired'), 'catalog eligibility and windows apply', offered);
  check(['back-to-school', 'mothers-day', 'internet-famous', 'gift-guide'].every((id) => offered.includes(id)),
    'every eligible, active collection is ranked', offered);

  const slots = ['homepage', 'email', 'detail'];
  const eventId = `node-${crypto.randomUUID()}`;
  const three = checkDecision(await call(service, 'Decide', decideRequest(slots, { event_id: eventId, explain: true })),
    slots, 'Decide, 3 slots');
  check(three.event_id === eventId, 'Decide keeps the caller\'s event id', three.event_id);
  for (const s of three.slots) {
    check(s.explanation.length > 0 && s.explanation.length <= 5, 'explain: up to 5 contributions', s.explanation.length);
    check(s.explanation.every((e) => /^(context|slot|collection)\./.test(e.group) && Number.isFinite(e.contribution)),
      'explain: groups named by role, finite contributions', s.explanation);
  }
  const again = await call(service, 'Decide', decideRequest(slots, { event_id: eventId }));
  check(JSON.stringify(again.slots.map((s) => s.collection_id)) === JSON.stringify(three.slots.map((s) => s.collection_id)),
    'a repeated event id returns the original decision', again.slots.map((s) => s.collection_id));

  const own = [
    { id: 'req-email-only', groups: features({ collection: { kind: 'a' } }), eligible_slots: ['email'] },
    { id: 'req-expired', groups: features({ collection: { kind: 'b' } }), active_until: YEAR_1970 },
    { id: 'req-anywhere', groups: features({ collection: { kind: 'c' } }) },
    { id: 'mothers-day' },  // id only: the catalog's
  ];
  const mine = checkDecision(await call(service, 'Decide', decideRequest(['homepage'], { candidates: own })), ['homepage'],
    'Decide with request candidates');
  const ranked = mine.slots[0].ranking.map((r) => r.collection_id).sort();
  check(JSON.stringify(ranked) === JSON.stringify(['mothers-day', 'req-anywhere']),
    'request candidates: eligible_slots and windows apply, id-only ones come from the catalog', ranked);

  await refused(call(service, 'Decide', decideRequest([])), grpc.status.INVALID_ARGUMENT, 'no slots', 'Decide without slots');
  await refused(call(service, 'Decide', decideRequest(['homepage'], { candidates: [{ id: 'not-in-catalog' }] })),
    grpc.status.NOT_FOUND, 'not in the catalog', 'Decide with an unknown id-only candidate');
  await refused(call(service, 'Decide', decideRequest(['homepage'], { candidates: [{ id: 'mothers-day', eligible_slots: ['email'] }] })),
    grpc.status.INVALID_ARGUMENT, 'catalog', 'Decide with eligibility on an id-only candidate');
  return { one, three };
}

async function rewards(service, { one, three }) {
  const r1 = await call(service, 'Reward', { event_id: one.event_id, value: 1 });
  check(r1.event_id === one.event_id && r1.slot_id === 'homepage', 'Reward of a 1-slot decision names its slot', r1);
  const r3 = await call(service, 'Reward', { event_id: three.event_id, slot_id: 'email', value: 2.5 });
  check(r3.slot_id === 'email', 'Reward of a named slot', r3);
  await refused(call(service, 'Reward', { event_id: three.event_id, value: 1 }), grpc.status.INVALID_ARGUMENT, 'slot_id',
    'Reward without slot_id on a 3-slot decision');
  await refused(call(service, 'Reward', { event_id: 'node-never-decided', value: 1 }), grpc.status.NOT_FOUND, 'unknown',
    'Reward of an unknown event');
  await refused(call(service, 'Reward', { event_id: one.event_id, value: 1e7 }), grpc.status.INVALID_ARGUMENT, 'reward range',
    'Reward outside [-1e6, 1e6]');
  await refused(call(service, 'Reward', { event_id: one.event_id, value: 1, at: YEAR_1970 }), grpc.status.INVALID_ARGUMENT,
    'before its decision', 'Reward at before its decision');

  const deferred = checkDecision(await call(service, 'Decide', decideRequest(['email'], { deferred_activation: true })),
    ['email'], 'Decide, deferred');
  await refused(call(service, 'Activate', { event_id: deferred.event_id, at: YEAR_9999 }), grpc.status.INVALID_ARGUMENT,
    'in the future', 'Activate in year 9999');
  const activated = await call(service, 'Activate', { event_id: deferred.event_id });
  check(activated.event_id === deferred.event_id, 'Activate answer', activated);
  await refused(call(service, 'Activate', { event_id: one.event_id }), grpc.status.FAILED_PRECONDITION, 'deferred_activation',
    'Activate of a decision that was not deferred');
}

function decideStream(service) {
  const ids = Array.from({ length: 5 }, (_, i) => `node-stream-${i}-${crypto.randomUUID()}`);
  return new Promise((resolve, reject) => {
    const answers = [];
    const stream = service.DecideStream();
    stream.on('data', (response) => answers.push(response));
    stream.on('error', reject);
    stream.on('end', () => {
      try {
        check(answers.length === ids.length, 'DecideStream: one answer per request', answers.length);
        answers.forEach((a, i) => {
          check(a.event_id === ids[i], 'DecideStream: answers in request order', [a.event_id, ids[i]]);
          checkDecision(a, ['homepage', 'email'], 'DecideStream');
        });
        resolve();
      } catch (err) {
        reject(err);
      }
    });
    ids.forEach((id) => stream.write(decideRequest(['homepage', 'email'], { event_id: id })));
    stream.end();
  });
}

function exportModel(admin, auth) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const stream = admin.ExportModel({ surface: '' }, auth);
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('error', reject);
    stream.on('end', () => resolve(chunks));
  });
}

async function administration(admin, auth, decided) {
  const info = await call(admin, 'GetModelInfo', { surface: '' }, auth);
  const versions = info.versions.map((v) => v.version);
  check(info.surface === 'default' && info.vw_arguments.includes('--ccb_explore_adf'), 'GetModelInfo answer', info.surface);
  check(versions.includes(info.current_version_number) && String(info.current_version_number) === info.current_version,
    'GetModelInfo: current version is a kept one, both fields agree', [info.current_version, info.current_version_number, versions]);
  await refused(call(admin, 'GetModelInfo', { surface: 'no-such-surface' }, auth), grpc.status.NOT_FOUND, 'no-such-surface',
    'GetModelInfo of an unknown surface');

  const stats = await call(admin, 'GetStats', {}, auth);
  check(stats.decisions >= decided, 'GetStats counts every decision', [stats.decisions, decided]);
  check(stats.rewards >= 2 && stats.activations >= 1, 'GetStats counts rewards and activations', [stats.rewards, stats.activations]);
  check(stats.bad_requests >= 8, 'GetStats counts refused calls', stats.bad_requests);
  const surface = stats.surfaces.find((s) => s.surface === 'default');
  check(surface && String(surface.model_version_number) === surface.model_version, 'GetStats: version fields agree', surface);

  const chunks = await exportModel(admin, auth);
  check(chunks.length > 0 && chunks[0].sha256.length === 64, 'ExportModel: first chunk carries the sha256', chunks.length);
  const data = Buffer.concat(chunks.map((c) => c.data));
  const sha = crypto.createHash('sha256').update(data).digest('hex');
  check(sha === chunks[0].sha256, 'ExportModel: the chunks are the file of that sha256', [sha, chunks[0].sha256]);
  check(versions.includes(chunks[0].version), 'ExportModel: a kept version', chunks[0].version);
}

async function main(target) {
  const api = load();
  const credentials = grpc.credentials.createInsecure();
  const service = new api.PlacementService(target, credentials);
  const admin = new api.PlacementAdmin(target, credentials);
  const health = new api.health.Health(target, credentials);
  const auth = new grpc.Metadata();
  auth.set('authorization', `Bearer ${process.env.PLACEMENT_ADMIN_TOKEN}`);
  try {
    for (const name of ['', 'placement.v1.PlacementService', 'placement.v1.PlacementAdmin']) {
      const answer = await call(health, 'Check', { service: name });
      check(answer.status === 'SERVING', `health Check '${name}'`, answer.status);
    }
    await catalog(admin, auth);
    const decided = await decisions(service);
    await rewards(service, decided);
    await decideStream(service);
    await administration(admin, auth, 4 + 5);  // 1, 3 slots, own candidates, deferred; the stream
  } finally {
    [service, admin, health].forEach((c) => c.close());
  }
}

if (process.argv.length !== 3 || !process.env.PLACEMENT_ADMIN_TOKEN) {
  console.error('usage: PLACEMENT_ADMIN_TOKEN=<the server\'s admin token> node client.js HOST:PORT');
  process.exit(2);
}
main(process.argv[2]).then(() => console.log('node client: every check passed'), (err) => {
  const kind = err instanceof Mismatch ? 'mismatch' : `unexpected error (${err.code !== undefined ? grpc.status[err.code] : err.name})`;
  console.error(`node client: ${kind}: ${err.details || err.message}`);
  process.exit(1);
});
