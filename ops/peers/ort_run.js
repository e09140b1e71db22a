#!/usr/bin/env node
// ort_run.js: run an ONNX model once with ONNX Runtime (CPU) on a raw
// little-endian float32 input and print every output as JSON, one per line:
//   {"name": "output", "dims": [1, 10], "data": [0.1, ...]}
//
//   node ops/peers/ort_run.js --model FILE.onnx --input RAW.f32 --shape N,C,H,W
//        [--input-name NAME] [--threads 1]
//
// The file must hold exactly prod(shape) float32 values (no header). The
// input is fed to the model's first input unless --input-name is given.
// Float outputs are printed with JavaScript's shortest round-trip formatting
// of the float32 value (exact); NaN/Infinity are printed as null (JSON has no
// such numbers); int64 outputs are converted to Number. Defaults to 1 thread
// so results do not depend on the thread count. Exit status: 0 ok, 1 runtime
// error, 2 usage / input error.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

function usage(msg) {
  if (msg) process.stderr.write(`ort_run: ${msg}\n`);
  process.stderr.write('usage: ort_run.js --model FILE.onnx --input RAW.f32 --shape N,C,H,W [--input-name NAME] [--threads 1]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { model: null, input: null, shape: null, inputName: null, threads: 1 };
  const keys = { '--model': 'model', '--input': 'input', '--shape': 'shape', '--input-name': 'inputName', '--threads': 'threads' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-h' || argv[i] === '--help') usage();
    const k = keys[argv[i]];
    if (!k) usage(`unknown argument ${argv[i]}`);
    if (argv[i + 1] === undefined) usage(`${argv[i]} needs a value`);
    a[k] = argv[++i];
  }
  if (!a.model || !a.input || !a.shape) usage('--model, --input and --shape are required');
  a.shape = a.shape.split(',').map((s) => Number(s.trim()));
  if (a.shape.length === 0 || a.shape.some((d) => !Number.isInteger(d) || d < 1)) usage('--shape must be positive integers separated by commas');
  a.threads = Number(a.threads);
  if (!Number.isInteger(a.threads) || a.threads < 1) usage('--threads must be a positive integer');
  return a;
}

function toJsonNumber(v) {
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  return Number.isFinite(v) ? v : null;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const n = a.shape.reduce((p, q) => p * q, 1);
  let buf;
  try {
    buf = fs.readFileSync(a.input);
  } catch (e) {
    usage(`cannot read ${a.input}: ${e.message}`);
  }
  if (buf.length !== n * 4) usage(`${a.input} has ${buf.length} bytes, shape ${a.shape.join(',')} needs ${n * 4}`);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = buf.readFloatLE(i * 4);

  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
  });
  const inName = a.inputName || session.inputNames[0];
  if (!session.inputNames.includes(inName)) usage(`model has no input "${inName}" (inputs: ${session.inputNames.join(', ')})`);
  const results = await session.run({ [inName]: new ort.Tensor('float32', data, a.shape) });
  for (const name of session.outputNames) {
    const t = results[name];
    const out = { name, dims: Array.from(t.dims), data: Array.from(t.data, toJsonNumber) };
    process.stdout.write(JSON.stringify(out) + '\n');
  }
  if (session.release) await session.release();
}

main().catch((e) => {
  process.stderr.write(`ort_run: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
