// Starts and stops real `tidings serve` processes for the tests.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import https from 'node:https';
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

/**
 * An HTTPS request that trusts only the certificate in the PEM file `caFile` (a hub's
 * self-signed one). Resolves to `{ status, text }`.
 */
export function requestTrusting(url, caFile, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const request = https.request(url, { method, headers, ca: readFileSync(caFile), agent: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('end', () => resolve({ status: response.statusCode, text }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

async function waitUntilUp(url, child, logFile, deadline, caFile) {
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`tidings serve exited with ${child.exitCode} before answering; see ${logFile}`);
    }
    try {
      if (caFile) {
        // The certificate file is written before the hub listens.
        const { status } = await requestTrusting(`${url}/healthz`, caFile);
        if (status === 200) return;
      } else {
        const response = await fetch(`${url}/healthz`);
        if (response.ok) return;
      }
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`tidings serve did not answer ${url}/healthz in time; see ${logFile}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Starts `tidings serve` on a free port with a fresh history file.
 * Options: `corsOrigins` (array), `demo` (default true), `args` (extra arguments), `tls`
 * (`'h2'`: HTTPS with a self-signed certificate, HTTP/2 and HTTP/1.1 by ALPN; `'http1'`: the
 * same with HTTP/1.1 only).
 * Returns `{ url, port, certFile (with tls), stop() }`.
 */
export async function startHub({ corsOrigins = [], demo = true, args = [], name = 'hub', tls } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'tidings-e2e-'));
  const logDir = path.join(here, '..', 'test-results', 'hub-logs');
  mkdirSync(logDir, { recursive: true });
  // A port can be taken between freePort() and the bind; try a few.
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    const certFile = tls ? path.join(dir, 'tidings.cert.pem') : undefined;
    const tlsArgs = { h2: ['--tls-self-signed'], http1: ['--tls-self-signed', '--tls-no-http2'] }[tls] ?? [];
    if (tls && tlsArgs.length === 0) throw new Error(`startHub: tls must be 'h2' or 'http1', not ${tls}`);
    const argv = [
      'serve',
      '--addr', `127.0.0.1:${port}`,
      '--db', path.join(dir, 'tidings.db'),
      '--jwt-key', JWT_KEY,
      ...corsOrigins.flatMap((origin) => ['--cors-origin', origin]),
      ...(demo ? [] : ['--no-demo']),
      ...tlsArgs,
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
      await waitUntilUp(url, child, logFile, Date.now() + 20_000, certFile);
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
      certFile,
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
