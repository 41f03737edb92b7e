// A TCP proxy between the browser and the hub, so a test can cut a live stream the
// way a network or a restarting hub does, without any test hook in the hub itself.

import net from 'node:net';

/**
 * Listens on a free port of 127.0.0.1 and forwards every connection to `target`.
 * `requests` collects the head (request line and headers) of each HTTP request
 * seen on a connection's first packet, lower-cased, for asserting on headers.
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  const requests = [];
  let server;

  function onConnection(client) {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (chunk) => {
      const text = chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (/^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/.test(text) && end > 0) requests.push(text.slice(0, end).toLowerCase());
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
  }

  function listen(port) {
    return new Promise((resolve, reject) => {
      server = net.createServer(onConnection);
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve(server.address().port));
    });
  }

  const port = await listen(0);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    /** Kills every open connection and refuses new ones until `restart()`. */
    async cut() {
      await new Promise((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        sockets.clear();
      });
    },
    /** Accepts connections again, on the same port. */
    async restart() {
      await listen(port);
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
