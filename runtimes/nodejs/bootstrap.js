// hearth's Node.js standby: one process per invocation, started before it is needed.
//
// Started by hearth-agent as `node bootstrap.js [--stem] CODE_DIR` with
//   fd 0  the event pipe: one JSON header line {request_id, deadline_ms, attempt[, output_dir]},
//         then the event bytes (JSON), then EOF; output_dir becomes $OUTPUT_DIR,
//         attempt $HEARTH_ATTEMPT
//   fd 1  stdout pipe, fd 2  stderr pipe (this invocation's own)
//   fd 3  the result pipe
// Once node has started it writes "B" on fd 3 and reads one byte, "G", from fd 0: the
// agent moves this process into the function's CPU quota in between, so that node's own
// start runs at full speed and everything from the function's code on is the function's.
// It loads CODE_DIR/index.js, writes the one-byte marker "R" on fd 3 (or, if the code
// fails to load, {"init_error": {type, message, trace}} and exits), then blocks on fd 0
// until the agent hands it an event, calls exports.handler(event, context) once, writes
// {"ok": value} or {"error": {type, message, trace}} on fd 3, closes fd 3 once stdout and
// stderr are flushed (the agent then ends the process: node's teardown is nobody's wait)
// and exits.
'use strict';

const fs = require('fs');
const path = require('path');
const url = require('url');

const RESULT_FD = 3;
// `--stem`: started in a stem, before any function: after "B" it first reads the one
// function's environment from fd 0 (8 decimal digits of length, then that much JSON),
// which replaces the stem's, then "G" as usual.
const stem = process.argv[2] === '--stem';
const codeDir = process.argv[stem ? 3 : 2];

function readExactly(fd, n) {
  const buf = Buffer.alloc(n);
  let off = 0;
  while (off < n) {
    const got = fs.readSync(fd, buf, off, n - off, null);
    if (got === 0) process.exit(70); // the agent went away
    off += got;
  }
  return buf;
}

function takeEnvironment() {
  const len = Number(readExactly(0, 8).toString('latin1'));
  const env = JSON.parse(readExactly(0, len).toString('utf8'));
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, env);
}

function writeAll(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

function errorInfo(e) {
  if (e instanceof Error) {
    return {
      type: String(e.name || (e.constructor && e.constructor.name) || 'Error'),
      message: String(e.message),
      trace: String(e.stack || ''),
    };
  }
  let message;
  try {
    message = typeof e === 'string' ? e : JSON.stringify(e);
  } catch (_) {
    message = String(e);
  }
  return { type: 'Error', message: String(message), trace: '' };
}

// Exits once stdout and stderr have handed everything to the kernel. With `closeResult`
// (a result was written), fd 3 is closed first: the agent takes that as the end of the
// invocation and ends the process at once, without waiting for node's own teardown.
function flushAndExit(code, closeResult) {
  let pending = 2;
  const done = () => {
    pending -= 1;
    if (pending !== 0) return;
    if (closeResult) {
      try {
        fs.closeSync(RESULT_FD);
      } catch (_) {
        // already closed by the handler: the exit says the rest
      }
    }
    process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

async function loadHandler() {
  const entry = path.join(codeDir, 'index.js');
  let mod;
  try {
    mod = require(entry);
  } catch (e) {
    if (e && e.code === 'ERR_REQUIRE_ESM') {
      mod = await import(url.pathToFileURL(entry).href);
    } else {
      throw e;
    }
  }
  const handler = mod && (mod.handler || (mod.default && mod.default.handler));
  if (typeof handler !== 'function') {
    throw new TypeError(
      'index.js does not export a function named handler ' +
        '(exports.handler = async (event, context) => { ... })',
    );
  }
  return handler;
}

function readInvocation() {
  const input = fs.readFileSync(0);
  const nl = input.indexOf(10);
  const header = JSON.parse(input.subarray(0, nl < 0 ? input.length : nl).toString('utf8'));
  const body = nl < 0 ? Buffer.alloc(0) : input.subarray(nl + 1);
  const text = body.toString('utf8');
  let event = null;
  if (text.trim() !== '') {
    try {
      event = JSON.parse(text);
    } catch (_) {
      event = text;
    }
  }
  return { header, event };
}

function makeContext(header) {
  const env = process.env;
  const deadline = Number(header.deadline_ms) || 0;
  const remaining = () => Math.max(0, Math.floor(deadline - Date.now()));
  const requestId = String(header.request_id || '');
  const name = env.HEARTH_FUNCTION_NAME || '';
  const version = Number(env.HEARTH_FUNCTION_VERSION) || 0;
  const memory = Number(env.HEARTH_MEMORY_LIMIT_MB) || 0;
  return {
    request_id: requestId,
    requestId,
    function_name: name,
    functionName: name,
    version,
    functionVersion: String(version),
    memory_limit_mb: memory,
    memoryLimitInMB: memory,
    deadline_ms: deadline,
    remainingTimeMs: remaining,
    remaining_time_ms: remaining,
    getRemainingTimeInMillis: remaining,
  };
}

async function main() {
  try {
    fs.writeFileSync('/proc/self/oom_score_adj', '1000');
  } catch (_) {
    // not on Linux, or no /proc: the OOM killer picks as it likes
  }
  writeAll(RESULT_FD, 'B');
  if (stem) takeEnvironment();
  const go = Buffer.alloc(1);
  if (fs.readSync(0, go, 0, 1, null) !== 1 || go[0] !== 0x47) {
    process.exit(70); // the agent went away, or broke the protocol
  }
  let handler;
  try {
    handler = await loadHandler();
  } catch (e) {
    writeAll(RESULT_FD, JSON.stringify({ init_error: errorInfo(e) }));
    flushAndExit(1);
    return;
  }
  writeAll(RESULT_FD, 'R');

  const { header, event } = readInvocation();
  process.env.HEARTH_REQUEST_ID = String(header.request_id || '');
  process.env.HEARTH_DEADLINE_MS = String(header.deadline_ms || 0);
  process.env.HEARTH_ATTEMPT = String(Number(header.attempt) || 1);
  if (header.output_dir) process.env.OUTPUT_DIR = String(header.output_dir);
  const context = makeContext(header);

  let settled = false;
  const finish = (outcome) => {
    if (settled) return;
    settled = true;
    let text;
    try {
      text = JSON.stringify(
        'error' in outcome ? outcome : { ok: outcome.ok === undefined ? null : outcome.ok },
      );
    } catch (e) {
      text = JSON.stringify({
        error: {
          type: 'TypeError',
          message: "the handler's return value is not JSON-serialisable: " + e.message,
          trace: '',
        },
      });
    }
    writeAll(RESULT_FD, text);
    flushAndExit(0, true);
  };
  const fail = (e) => finish({ error: errorInfo(e) });
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  process.on('beforeExit', () =>
    fail(new Error('the handler returned a promise that never settled')),
  );

  try {
    const args = [event, context];
    if (handler.length >= 3) {
      args.push((err, value) => (err ? fail(err) : finish({ ok: value })));
    }
    const value = handler(...args);
    if (value && typeof value.then === 'function') {
      value.then((v) => finish({ ok: v }), fail);
    } else if (handler.length < 3) {
      finish({ ok: value });
    }
  } catch (e) {
    fail(e);
  }
}

main().catch((e) => {
  try {
    writeAll(RESULT_FD, JSON.stringify({ error: errorInfo(e) }));
  } finally {
    flushAndExit(1);
  }
});
