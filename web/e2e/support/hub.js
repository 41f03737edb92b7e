// Starts and stops real `tidings serve` processes for the tests.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, createWriteStream, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');

/** The HS256 key every test hub uses; tests mint their tokens with it. */
export const JWT_KEY = 'e2e-test-key-that-is-long-enough-for-hs256-0123456789';

/** The `tidings` binary: $TIDINGS_BIN, else the debug build in the cargo target dir. */
export function tidingsBinary() {
  if (process.env.TIDINGS_BIN) return process.env.TIDINGS_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target');
  return path.join(target, 'debug', 'tidings');
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitUntilUp(url, child, logFile, deadline) {
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`tidings serve exited with ${child.exitCode} before answering; see ${logFile}`);
    }
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`tidings serve did not answer ${url}/healthz in time; see ${logFile}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Starts `tidings serve` on a free port with a fresh history file.
 * Options: `corsOrigins` (array), `demo` (default true), `args` (extra arguments).
 * Returns `{ url, port, stop() }`.
 */
export async function startHub({ corsOrigins = [], demo = true, args = [], name = 'hub' } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'tidings-e2e-'));
  const logDir = path.join(here, '..', 'test-results', 'hub-logs');
  mkdirSync(logDir, { recursive: true });
  // A port can be taken between freePort() and the bind; try a few.
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const argv = [
      'serve',
      '--addr', `127.0.0.1:${port}`,
      '--db', path.join(dir, 'tidings.db'),
      '--jwt-key', JWT_KEY,
      ...corsOrigins.flatMap((origin) => ['--cors-origin', origin]),
      ...(demo ? [] : ['--no-demo']),
      ...args,
    ];
    const logFile = path.join(logDir, `${name}-${port}.log`);
    const log = createWriteStream(logFile);
    const child = spawn(tidingsBinary(), argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' },
    });
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await waitUntilUp(url, child, logFile, Date.now() + 20_000);
    } catch (error) {
      child.kill('SIGKILL');
      await exited;
      if (attempt < 3) continue;
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
    return {
      url,
      port,
      async stop() {
        if (child.exitCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(timer);
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
}
