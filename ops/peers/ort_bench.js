#!/usr/bin/env node
// ort_bench.js: ONNX Runtime (onnxruntime-node, CPU EP) peer latency for
// ursa's model benchmark.
//
//   node ops/peers/ort_bench.js --model FILE.onnx [--batch B] [--threads 2]
//        [--iters N] [--warmup W]
//
// One InferenceSession (intraOpNumThreads=threads, interOpNumThreads=1,
// sequential execution, graphOptimizationLevel 'all'), one random float32
// input [B,C,H,W]; C/H/W come from the model's input metadata when they are
// fixed numbers there, else 3/224/224. Median wall time of session.run over
// N iterations after W warm-up runs. Prints one line of key=value pairs:
//   peer=onnxruntime model=r18.onnx batch=1 threads=2 latency_ms=... throughput_ips=...
'use strict';

const path = require('path');
const ort = require('onnxruntime-node');

function usage(msg) {
  if (msg) process.stderr.write(`ort_bench: ${msg}\n`);
  process.stderr.write('usage: ort_bench.js --model FILE.onnx [--batch B] [--threads 2] [--iters N] [--warmup W]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { model: null, batch: 1, threads: 2, iters: 50, warmup: 5 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '-h' || k === '--help') usage();
    if (!['--model', '--batch', '--threads', '--iters', '--warmup'].includes(k)) usage(`unknown argument ${k}`);
    if (v === undefined) usage(`${k} needs a value`);
    i++;
    if (k === '--model') { a.model = v; continue; }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) usage(`${k} needs a non-negative integer`);
    a[k.slice(2)] = n;
  }
  if (!a.model) usage('--model is required');
  if (a.batch < 1 || a.threads < 1 || a.iters < 1) usage('batch, threads and iters must be >= 1');
  return a;
}

// Input dims [C,H,W] from session.inputMetadata (onnxruntime-node >= 1.21);
// symbolic or missing dims fall back to 3,224,224.
function inputChw(session) {
  const dflt = [3, 224, 224];
  const md = session.inputMetadata;
  if (!Array.isArray(md) || md.length === 0 || !Array.isArray(md[0].shape)) return { chw: dflt, from: 'default' };
  const shape = md[0].shape;
  if (shape.length !== 4) return { chw: dflt, from: 'default' };
  let from = 'model';
  const chw = shape.slice(1).map((d, j) => {
    if (typeof d === 'number' && d > 0) return d;
    from = 'model+default';
    return dflt[j];
  });
  return { chw, from };
}

function median(xs) {
  const s = xs.slice().sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
  });
  const inName = session.inputNames[0];
  const { chw, from } = inputChw(session);
  const dims = [a.batch, ...chw];
  const n = dims.reduce((p, q) => p * q, 1);
  const data = new Float32Array(n);
  // Deterministic pseudo-random N(0,1)-ish input (xorshift32 + Box-Muller).
  let s = 0x2545f491;
  const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return (s + 1) / 4294967297; };
  for (let i = 0; i < n; i++) data[i] = Math.sqrt(-2 * Math.log(rnd())) * Math.cos(2 * Math.PI * rnd());
  const feeds = { [inName]: new ort.Tensor('float32', data, dims) };

  const times = [];
  for (let i = 0; i < a.warmup + a.iters; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const t1 = process.hrtime.bigint();
    if (i >= a.warmup) times.push(Number(t1 - t0) / 1e6);
  }
  const med = median(times);
  const fields = [
    ['peer', 'onnxruntime'],
    ['model', path.basename(a.model)],
    ['batch', a.batch],
    ['threads', a.threads],
    ['input', dims.join('x')],
    ['input_from', from],
    ['iters', a.iters],
    ['latency_ms', med.toFixed(1)],
    ['min_ms', Math.min(...times).toFixed(1)],
    ['throughput_ips', (a.batch * 1000 / med).toFixed(1)],
    ['peak_rss_mb', (process.resourceUsage().maxRSS / 1024).toFixed(0)],
    ['ort', (ort.env.versions && ort.env.versions.node) || 'unknown'],
  ];
  process.stdout.write(fields.map(([k, v]) => `${k}=${v}`).join(' ') + '\n');
  if (session.release) await session.release();
}

main().catch((e) => {
  process.stderr.write(`ort_bench: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
