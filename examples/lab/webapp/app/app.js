// Answers every request with this container's name, like the lab's app.
// APP_HOST, when set, is the one address it listens on (default: all).
const http = require("http");
const os = require("os");
const port = Number(process.env.APP_PORT || 3000);
const host = process.env.APP_HOST || undefined;
const name = process.env.APP_NAME || os.hostname();
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(req.method === "HEAD" ? undefined : `hello from ${name}\n`);
  })
  .listen(port, host, () => console.log(`listening on ${host || "*"}:${port}`));
