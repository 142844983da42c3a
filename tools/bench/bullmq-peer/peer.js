// tools/bench/bullmq-peer/peer.js -- the BullMQ peer of tools/bench/pipeline
// (docs/performance.md, "Game events (pipeline)"): the node's game events as BullMQ jobs, and
// a worker doing the same PostgreSQL writes as the node's consumer (scripts/lib/pipeline.lua).
//
//   node peer.js produce   add jobs for SECONDS: CONCURRENCY loops in this process, each one
//                          Queue.addBulk() of BATCH jobs at a time, awaited, then the next
//   node peer.js fill      add the N events of the processing workload (the same events the
//                          script writes into the node's stream), CONCURRENCY addBulk calls at
//                          a time; no worker runs meanwhile
//   node peer.js drop      obliterate the queue (force: jobs still waiting too)
//   node peer.js work      a Worker until N jobs are completed (N > 0; it prints the time from
//                          worker.run() to the N-th "completed"), or until SIGTERM (N = 0)
//
// A job is one event, its data the object the node appends to its stream ({id, type,
// player_id, ts, data, account_id, sid, received, region}), its name the event's type, added
// with removeOnComplete: true (completed jobs are deleted, as a stream's entries are trimmed).
// The producer does no validation, no authentication and no HTTP: it is BullMQ's own cost of
// taking an event, which the node's figure includes on top of its HTTP and validation.
//
// Worker modes (WORKER_MODE):
//   batch  (default) a Worker with CONCURRENCY jobs in flight; each job's processor hands its
//          event to a collector and waits; the collector writes whatever is waiting (at most
//          MAX_BATCH events) in one transaction with the node's statements (insert into
//          processed_events ... on conflict do nothing returning; update players ... xp summed
//          per player; inventory upsert for loot), FLUSHES transactions at a time, then
//          resolves the jobs, so each job completes only after its effect is committed. This
//          is the bulk pattern open-source BullMQ allows (batches of jobs are a BullMQ Pro
//          feature).
//   job    a Worker with CONCURRENCY jobs in flight, one statement per job: a CTE that inserts
//          the event's id into processed_events and, if it was new, adds its xp to the player
//          (a loot event: its inventory upsert instead), in autocommit; POOL connections.
//
// Environment: REDIS_HOST REDIS_PORT PREFIX QUEUE PG (conninfo) POOL [8] CONCURRENCY [64]
// BATCH [100] SECONDS [10] WARMUP [2] N [0] RUN (id prefix) PLAYERS (file: "<player id>
// <account id>" a line) WORKER_MODE [batch] MAX_BATCH [500] FLUSHES [1] OUT (JSON result file)
'use strict';

const fs = require('fs');
const { performance } = require('perf_hooks');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const pg = require('pg');

const env = process.env;
const num = (k, d) => (env[k] === undefined || env[k] === '' ? d : Number(env[k]));
const REDIS = { host: env.REDIS_HOST || '127.0.0.1', port: num('REDIS_PORT', 6379) };
const PREFIX = env.PREFIX || 'bullbench';
const QUEUE = env.QUEUE || 'events';
const CONCURRENCY = num('CONCURRENCY', 64);
const BATCH = num('BATCH', 100);
const SECONDS = num('SECONDS', 10);
const WARMUP = num('WARMUP', 2);
const N = num('N', 0);
const RUN = env.RUN || String(Date.now());
const MODE = env.WORKER_MODE || 'batch';
const MAX_BATCH = num('MAX_BATCH', 500);
const FLUSHES = num('FLUSHES', 1);
const POOL = num('POOL', 8);
const ITEMS = ['potion_small', 'elixir_mana', 'ore_iron', 'herb_moonleaf'];
const MONSTERS = ['wolf', 'bat', 'goblin', 'skeleton', 'troll'];
const JOB_OPTS = { removeOnComplete: true };

function players() {
    const list = fs.readFileSync(env.PLAYERS, 'utf8').split('\n').filter((l) => /^\d+\s+\d+/.test(l))
        .map((l) => l.trim().split(/\s+/).map(Number));
    if (list.length === 0) throw new Error('PLAYERS has no player');
    return list; // [[player_id, account_id], ...]
}

function out(result) {
    const text = JSON.stringify(result);
    if (env.OUT) fs.writeFileSync(env.OUT, text + '\n');
    console.log(text);
}

function pct(sorted, p) {
    if (sorted.length === 0) return 0;
    return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

// The processing workload's event i, as tools/bench/pipeline writes it into the node's stream
// (the same formula there, in awk): four kills to one loot, spread over the players.
function procEvent(i, list, now) {
    const [pid, acct] = list[(i * 7919) % list.length];
    const e = { id: `${RUN}-${i}`, player_id: pid, ts: now, account_id: acct, sid: 'bench',
                received: now, region: 'r1' };
    if (i % 5 === 4) {
        e.type = 'loot';
        e.data = { item: ITEMS[i % 4], qty: 1 + (i % 3) };
    } else {
        e.type = 'kill';
        e.data = { monster: 'wolf', level: 1 + ((i * 31) % 60) };
    }
    return e;
}

// ---- produce ---------------------------------------------------------------------------------

async function produce() {
    const list = players();
    const queue = new Queue(QUEUE, { connection: REDIS, prefix: PREFIX });
    await queue.waitUntilReady();
    let counting = false, stop = false, seq = 0;
    let events = 0, calls = 0, errors = 0;
    const lat = [];
    async function loop(k) {
        const [pid, acct] = list[k % list.length]; // each loop is one account's player
        while (!stop) {
            seq += 1;
            const now = Math.floor(Date.now() / 1000);
            const jobs = new Array(BATCH);
            for (let j = 0; j < BATCH; j++) {
                const e = { id: `${RUN}-${k}-${seq}-${j}`, player_id: pid, ts: now, account_id: acct,
                            sid: 'bench', received: Date.now() / 1000, region: 'r1' };
                if ((j + 1) % 5 === 0) {
                    e.type = 'loot';
                    e.data = { item: ITEMS[Math.floor(Math.random() * 4)], qty: 1 + Math.floor(Math.random() * 3) };
                } else {
                    e.type = 'kill';
                    e.data = { monster: MONSTERS[Math.floor(Math.random() * 5)], level: 1 + Math.floor(Math.random() * 60) };
                }
                jobs[j] = { name: e.type, data: e, opts: JOB_OPTS };
            }
            const t = performance.now();
            try {
                await queue.addBulk(jobs);
                if (counting) {
                    lat.push(performance.now() - t);
                    events += BATCH;
                    calls += 1;
                }
            } catch (err) {
                if (counting) errors += 1;
                if (errors < 5) console.error('addBulk failed:', err.message);
            }
        }
    }
    const loops = [];
    for (let k = 0; k < CONCURRENCY; k++) loops.push(loop(k));
    await new Promise((r) => setTimeout(r, WARMUP * 1000));
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    counting = true;
    console.error('mark start'); // tools/bench/pipeline samples CPU use between the marks
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    counting = false;
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    stop = true;
    console.error('mark end');
    // (tools/bench/pipeline reads this process's CPU use at the marks: it stays a second more)
    await new Promise((r) => setTimeout(r, 1000));
    await Promise.all(loops);
    lat.sort((a, b) => a - b);
    const waiting = await queue.getWaitingCount();
    await queue.close();
    out({ what: 'produce', events, calls, errors, seconds: secs, events_per_s: events / secs,
          p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), max_ms: lat.length ? lat[lat.length - 1] : 0,
          cpu_s: (cpu.user + cpu.system) / 1e6, waiting_after: waiting });
}

// ---- fill ------------------------------------------------------------------------------------

async function fill() {
    const list = players();
    const queue = new Queue(QUEUE, { connection: REDIS, prefix: PREFIX });
    await queue.waitUntilReady();
    const now = Math.floor(Date.now() / 1000);
    const t0 = performance.now();
    let next = 0, xp = 0, loot = 0;
    for (let i = 0; i < N; i++) {
        const e = procEvent(i, list, now);
        if (e.type === 'kill') xp += 10 * e.data.level; else loot += e.data.qty;
    }
    async function loop() {
        while (next < N) {
            const from = next;
            next = Math.min(N, next + BATCH);
            const jobs = [];
            for (let i = from; i < next; i++) {
                const e = procEvent(i, list, now);
                jobs.push({ name: e.type, data: e, opts: JOB_OPTS });
            }
            await queue.addBulk(jobs);
        }
    }
    const loops = [];
    for (let k = 0; k < CONCURRENCY; k++) loops.push(loop());
    await Promise.all(loops);
    const secs = (performance.now() - t0) / 1000;
    const waiting = await queue.getWaitingCount();
    await queue.close();
    out({ what: 'fill', events: N, seconds: secs, waiting, expected_xp: xp, expected_loot: loot });
}

// ---- work ------------------------------------------------------------------------------------

// The node's statements (scripts/lib/pipeline.lua, write_shard), verbatim.
const COLUMNS = 'id, account_id, name, class, level, xp, hp, mp, region, x, y, moved_at, ' +
    'home_region, appearance, buffs, guild_id, version';
const SQL_IDS = 'insert into processed_events (account_id, id, type, player_id) ' +
    'select account_id, id, type, player_id from jsonb_to_recordset($1) as ' +
    't(account_id bigint, id text, type text, player_id bigint) ' +
    'on conflict do nothing returning account_id, id';
const SQL_XP = 'update players p set xp = p.xp + s.add_xp, version = p.version + 1 ' +
    'from jsonb_to_recordset($1) as s(pid bigint, add_xp bigint) ' +
    'where p.id = s.pid returning ' + COLUMNS;
const SQL_ITEMS = 'insert into inventory (player_id, item, qty) ' +
    'select t.player_id, t.item, sum(t.qty) from jsonb_to_recordset($1) as ' +
    't(player_id bigint, item text, qty int) join players p on p.id = ' +
    't.player_id group by t.player_id, t.item ' +
    'on conflict (player_id, item) do update set qty = inventory.qty + excluded.qty';
// one job, one statement (WORKER_MODE=job)
const SQL_JOB_KILL = 'with new as (insert into processed_events (account_id, id, type, player_id) ' +
    'values ($1, $2, $3, $4) on conflict do nothing returning player_id) ' +
    'update players p set xp = p.xp + $5, version = p.version + 1 from new where p.id = new.player_id';
const SQL_JOB_LOOT = 'with new as (insert into processed_events (account_id, id, type, player_id) ' +
    'values ($1, $2, $3, $4) on conflict do nothing returning player_id) ' +
    'insert into inventory (player_id, item, qty) select new.player_id, $5, $6 from new ' +
    'join players p on p.id = new.player_id ' +
    'on conflict (player_id, item) do update set qty = inventory.qty + excluded.qty';

const XP_PER_LEVEL = 10; // scripts/jobs/kill.lua

async function writeBatch(client, list) {
    const rows = list.map((e) => ({ account_id: e.account_id, id: e.id, type: e.type, player_id: e.player_id }));
    await client.query('begin');
    try {
        const fresh = await client.query(SQL_IDS, [JSON.stringify(rows)]);
        const isNew = new Set(fresh.rows.map((r) => `${r.account_id}/${r.id}`));
        const xp = new Map();
        const items = [];
        for (const e of list) {
            const key = `${e.account_id}/${e.id}`;
            if (!isNew.has(key)) continue;
            isNew.delete(key);
            if (e.type === 'kill') xp.set(e.player_id, (xp.get(e.player_id) || 0) + XP_PER_LEVEL * e.data.level);
            else items.push({ player_id: e.player_id, item: e.data.item, qty: e.data.qty });
        }
        if (xp.size > 0) {
            const xpRows = [...xp].map(([pid, add]) => ({ pid, add_xp: add }));
            await client.query(SQL_XP, [JSON.stringify(xpRows)]);
        }
        if (items.length > 0) await client.query(SQL_ITEMS, [JSON.stringify(items)]);
        await client.query('commit');
    } catch (err) {
        await client.query('rollback').catch(() => {});
        throw err;
    }
}

async function work() {
    const pool = new pg.Pool({ connectionString: env.PG, max: POOL });
    const connection = new IORedis({ ...REDIS, maxRetriesPerRequest: null });
    const batches = [];
    let processor;
    if (MODE === 'batch') {
        let pending = [];
        let inFlight = 0;
        const flush = () => {
            while (inFlight < FLUSHES && pending.length > 0) {
                const take = pending.slice(0, MAX_BATCH);
                pending = pending.slice(take.length);
                inFlight += 1;
                batches.push(take.length);
                (async () => {
                    const client = await pool.connect();
                    try {
                        await writeBatch(client, take.map((p) => p.e));
                        for (const p of take) p.resolve();
                    } catch (err) {
                        for (const p of take) p.reject(err);
                    } finally {
                        client.release();
                        inFlight -= 1;
                        setImmediate(flush);
                    }
                })();
            }
        };
        processor = (job) => new Promise((resolve, reject) => {
            pending.push({ e: job.data, resolve, reject });
            if (inFlight < FLUSHES) setImmediate(flush);
        });
    } else if (MODE === 'job') {
        processor = async (job) => {
            const e = job.data;
            if (e.type === 'kill') {
                await pool.query(SQL_JOB_KILL, [e.account_id, e.id, e.type, e.player_id, XP_PER_LEVEL * e.data.level]);
            } else {
                await pool.query(SQL_JOB_LOOT, [e.account_id, e.id, e.type, e.player_id, e.data.item, e.data.qty]);
            }
        };
    } else {
        throw new Error(`WORKER_MODE must be batch or job, not ${MODE}`);
    }
    const worker = new Worker(QUEUE, processor, { connection, prefix: PREFIX, concurrency: CONCURRENCY,
                                                  autorun: false });
    let completed = 0, failed = 0, t1 = 0, cpu0, cpu1, doneResolve;
    const done = new Promise((r) => { doneResolve = r; });
    worker.on('completed', () => {
        completed += 1;
        if (N > 0 && completed === N) {
            t1 = performance.now();
            cpu1 = process.cpuUsage(cpu0);
            // tools/bench/pipeline samples PostgreSQL's CPU use at the marks, while this
            // worker's connections (their backends) are still there
            console.error('mark done');
            setTimeout(doneResolve, 1000);
        }
    });
    worker.on('failed', (job, err) => {
        failed += 1;
        if (failed < 5) console.error('job failed:', err && err.message);
    });
    worker.on('error', (err) => console.error('worker error:', err.message));
    // SIGUSR2: how many so far (tools/bench/pipeline, at the edges of a producer's window)
    process.on('SIGUSR2', () => console.error(`count ${completed} ${performance.now()}`));
    process.on('SIGTERM', () => doneResolve());
    process.on('SIGINT', () => doneResolve());
    await worker.waitUntilReady();
    console.error('mark start');
    cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const running = worker.run();
    // progress, once a second: "progress <seconds> <completed> <failed>"
    const progress = setInterval(() => {
        console.error(`progress ${((performance.now() - t0) / 1000).toFixed(1)} ${completed} ${failed}`);
    }, 1000);
    let timer;
    if (N > 0 && SECONDS > 0) timer = setTimeout(doneResolve, SECONDS * 1000); // a bound
    await done;
    clearTimeout(timer);
    clearInterval(progress);
    const end = t1 || performance.now();
    const cpu = cpu1 || process.cpuUsage(cpu0);
    await worker.close();
    await running.catch(() => {});
    const queue = new Queue(QUEUE, { connection: REDIS, prefix: PREFIX });
    const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'failed', 'completed');
    await queue.close();
    await connection.quit();
    await pool.end();
    const secs = (end - t0) / 1000;
    const sizes = batches.slice().sort((a, b) => a - b);
    out({ what: 'work', mode: MODE, concurrency: CONCURRENCY, completed, failed, drained: N > 0 && completed >= N,
          seconds: secs, events_per_s: completed / secs, cpu_s: (cpu.user + cpu.system) / 1e6,
          batches: batches.length, batch_p50: pct(sizes, 50), batch_max: sizes.length ? sizes[sizes.length - 1] : 0,
          counts });
}

// drop: the queue and its jobs, gone (Queue.obliterate)
async function drop() {
    const queue = new Queue(QUEUE, { connection: REDIS, prefix: PREFIX });
    await queue.obliterate({ force: true });
    await queue.close();
}

const cmd = process.argv[2];
const main = { produce, fill, work, drop }[cmd];
if (!main) {
    console.error('usage: node peer.js produce|fill|work');
    process.exit(2);
}
main().then(() => process.exit(0), (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
});
