// The Socket.IO peer of `herald bench`: a Socket.IO 4 server with rooms, websocket transport
// only, doing the least a chat server would: `join` puts the socket in a room (acknowledged,
// so the generator knows it is subscribed), `pub` broadcasts the payload to the room as `m`.
//
// PORT (default 0: any free port) and HOST (default 127.0.0.1) choose the address; the chosen
// port is printed as `listening <port>` on stdout, one line, for the bench to read. The
// process exits when its stdin closes, so it never outlives the bench that started it, even
// when the bench is killed.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 0);

const httpServer = http.createServer((_req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, {
  transports: ["websocket"],
  // Same default frame cap as Herald's content limit, far above the bench's messages.
  maxHttpBufferSize: 1e6,
  serveClient: false,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof room !== "string") return;
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("pub", (room, payload) => {
    if (typeof room !== "string") return;
    io.to(room).emit("m", payload);
  });
});

httpServer.listen(port, host, () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});

function stop() {
  io.close();
  process.exit(0);
}
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
