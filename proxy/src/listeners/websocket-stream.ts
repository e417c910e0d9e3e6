/**
 * One upgraded WebSocket as a Duplex of MQTT bytes. Thin on purpose:
 * binary messages are pushed as they are (no copy; the relay's framer handles
 * packets split across or packed within messages), each write is one binary
 * message, backpressure both ways (ws.pause() when the reader is full; write
 * callbacks complete when the socket took the frame).
 * ws's own createWebSocketStream would do, except that it passes text frames
 * on as bytes, which MQTT forbids (MQTT 5.0 §6: close on any non-binary data frame).
 * end() sends a Close frame (1000); destroy() drops the TCP connection at once.
 */
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

export class WebSocketDuplex extends Duplex {
  private refusedText = false;

  constructor(private readonly ws: WebSocket, onTextFrame: () => void) {
    super({ allowHalfOpen: false });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (this.refusedText) return;
      if (!isBinary) {
        this.refusedText = true;
        onTextFrame();
        ws.close(1003, 'MQTT needs binary frames');
        return;
      }
      if (!this.push(data)) ws.pause();
    });
    ws.on('close', () => this.push(null));
    ws.on('error', (err) => this.destroy(err));
  }

  override _read(): void {
    this.ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState !== this.ws.OPEN) return callback(new Error('WebSocket is closed'));
    this.ws.send(chunk, { binary: true }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.ws.readyState !== this.ws.CLOSED) this.ws.terminate();
    callback(err);
  }
}
