// The browser's terminal protocol on the WebSocket at /console/api/terminal: binary frames
// whose first byte says what they carry (docs/wire.md §2.5). Terminal bytes travel raw.

/** Browser → broker kinds. */
export const Up = {
  Hello: 0x01,
  Resume: 0x02,
  Input: 0x10,
  Resize: 0x11,
  Ack: 0x12,
  Ping: 0x13,
  Terminate: 0x14,
} as const;

/** Broker → browser kinds. */
export const Down = {
  Ready: 0x81,
  Resumed: 0x82,
  Output: 0x90,
  Pong: 0x93,
  Exit: 0x94,
  Closed: 0x95,
} as const;

const enc = new TextEncoder();

function u16(v: number): number {
  return Math.max(0, Math.min(0xffff, Math.floor(v)));
}

/** The first message: the CSRF token, the StartSession token and the terminal's size. */
export function hello(csrf: string, token: string, cols: number, rows: number): Uint8Array {
  return opening(Up.Hello, csrf, token, cols, rows, null);
}

/** The first message of a resumed stream: as `hello`, plus the next output frame wanted. */
export function resume(csrf: string, token: string, cols: number, rows: number, outputNext: number): Uint8Array {
  return opening(Up.Resume, csrf, token, cols, rows, outputNext);
}

function opening(kind: number, csrf: string, token: string, cols: number, rows: number, next: number | null): Uint8Array {
  const c = enc.encode(csrf);
  const t = enc.encode(token);
  const extra = next === null ? 0 : 8;
  const out = new Uint8Array(7 + c.length + extra + t.length);
  const v = new DataView(out.buffer);
  out[0] = kind;
  v.setUint16(1, u16(cols));
  v.setUint16(3, u16(rows));
  v.setUint16(5, c.length);
  out.set(c, 7);
  let at = 7 + c.length;
  if (next !== null) {
    v.setBigUint64(at, BigInt(next));
    at += 8;
  }
  out.set(t, at);
  return out;
}

/** The largest input message's payload (the broker refuses messages over 64 KiB). */
export const INPUT_CHUNK = 32 * 1024;

/** Keystrokes or pasted text, as messages of at most INPUT_CHUNK bytes each. */
export function input(data: string | Uint8Array): Uint8Array[] {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += INPUT_CHUNK) {
    const part = bytes.subarray(at, at + INPUT_CHUNK);
    const msg = new Uint8Array(1 + part.length);
    msg[0] = Up.Input;
    msg.set(part, 1);
    out.push(msg);
  }
  return out;
}

/** The terminal's new size. */
export function resize(cols: number, rows: number): Uint8Array {
  const out = new Uint8Array(5);
  const v = new DataView(out.buffer);
  out[0] = Up.Resize;
  v.setUint16(1, u16(cols));
  v.setUint16(3, u16(rows));
  return out;
}

/** Every output frame below `next` is on the screen. */
export function ack(next: number): Uint8Array {
  const out = new Uint8Array(9);
  out[0] = Up.Ack;
  new DataView(out.buffer).setBigUint64(1, BigInt(next));
  return out;
}

/** A latency probe carrying the send time in microseconds; the broker echoes it. */
export function ping(atUs: number): Uint8Array {
  const out = new Uint8Array(9);
  out[0] = Up.Ping;
  new DataView(out.buffer).setBigUint64(1, BigInt(Math.max(0, Math.floor(atUs))));
  return out;
}

/** End the session on purpose. */
export function terminate(): Uint8Array {
  return Uint8Array.of(Up.Terminate);
}

/** A message from the broker. */
export type DownMsg =
  | { kind: "ready"; sessionId: string }
  | { kind: "resumed" }
  | { kind: "output"; seq: number; data: Uint8Array }
  | { kind: "pong"; atUs: number }
  | { kind: "exit"; code: number }
  | { kind: "closed"; message: string };

const dec = new TextDecoder();

/** Decodes one broker message; null for an unknown or short one. */
export function decode(buf: ArrayBuffer): DownMsg | null {
  const b = new Uint8Array(buf);
  if (b.length < 1) return null;
  const v = new DataView(buf);
  switch (b[0]) {
    case Down.Ready:
      return { kind: "ready", sessionId: dec.decode(b.subarray(1)) };
    case Down.Resumed:
      return { kind: "resumed" };
    case Down.Output:
      if (b.length < 9) return null;
      return { kind: "output", seq: Number(v.getBigUint64(1)), data: b.subarray(9) };
    case Down.Pong:
      if (b.length < 9) return null;
      return { kind: "pong", atUs: Number(v.getBigUint64(1)) };
    case Down.Exit:
      if (b.length < 5) return null;
      return { kind: "exit", code: v.getInt32(1) };
    case Down.Closed:
      return { kind: "closed", message: dec.decode(b.subarray(1)) };
    default:
      return null;
  }
}
