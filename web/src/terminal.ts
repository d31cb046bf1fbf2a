// One terminal tab: xterm.js on a WebSocket to /console/api/terminal speaking the binary
// protocol of proto.ts. Output is acknowledged only once xterm has written it (its write
// callback), so the broker stops reading the session when the page falls behind; after a
// dropped socket the tab resumes with ResumeSession and the next output frame it lacks.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { SearchAddon } from "@xterm/addon-search";
import { WebLinksAddon } from "@xterm/addon-web-links";
import { WebglAddon } from "@xterm/addon-webgl";
import { call, csrfToken, ApiError } from "./api";
import { h } from "./dom";
import * as proto from "./proto";

const DARK = { background: "#0f1419", foreground: "#d8dee9", cursor: "#d8dee9", selectionBackground: "#3b4b61" };
const LIGHT = { background: "#fbfbfa", foreground: "#1d2329", cursor: "#1d2329", selectionBackground: "#b8d3f0" };

/** How often the latency probe runs. */
const PING_MS = 2000;
/** Resume attempts back off from this … */
const RETRY_FIRST_MS = 500;
/** … doubling up to this. */
const RETRY_MAX_MS = 10_000;

/** Refused ResumeSession calls in a row before the tab gives up. */
const MAX_REFUSED = 8;

type State = "starting" | "connected" | "reconnecting" | "ended";

/** A live terminal in a tab panel. */
export class TerminalTab {
  readonly panel: HTMLElement;
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly search = new SearchAddon();
  private readonly status: HTMLElement;
  private readonly latency: HTMLElement;
  private readonly searchBox: HTMLInputElement;
  private readonly screen: HTMLElement;
  private ws: WebSocket | null = null;
  private sessionId = "";
  private outputNext = 0;
  private state: State = "starting";
  private pinger = 0;
  private retryMs = RETRY_FIRST_MS;
  private attempts = 0;
  private wasReady = false;
  private ending = false;
  private resizeObserver: ResizeObserver;

  constructor(
    readonly instanceId: string,
    readonly label: string,
    private readonly onState: (tab: TerminalTab) => void,
  ) {
    this.status = h("span", { class: "term-status", role: "status" }, "Starting…");
    this.latency = h("span", { class: "latency", title: "Round trip to the broker" }, "– ms");
    this.searchBox = h("input", {
      type: "search",
      class: "term-search",
      placeholder: "Search (Ctrl+Shift+F)",
      "aria-label": "Search in terminal",
      onkeydown: ((e: KeyboardEvent) => {
        if (e.key === "Enter") {
          e.preventDefault();
          const q = this.searchBox.value;
          if (e.shiftKey) this.search.findPrevious(q);
          else this.search.findNext(q);
        } else if (e.key === "Escape") {
          this.term.focus();
        }
      }) as EventListener,
    });
    const srToggle = h("input", {
      type: "checkbox",
      id: `sr-${instanceId}-${Date.now()}`,
      onchange: ((e: Event) => {
        this.term.options.screenReaderMode = (e.target as HTMLInputElement).checked;
      }) as EventListener,
    });
    this.screen = h("div", { class: "term-screen" });
    const toolbar = h(
      "div",
      { class: "term-toolbar", role: "toolbar", "aria-label": `Terminal ${label}` },
      h("span", { class: "term-title" }, label),
      this.status,
      this.latency,
      this.searchBox,
      h("label", { class: "check", for: srToggle.id }, srToggle, "Screen reader mode"),
      h("button", { type: "button", class: "danger", onclick: () => void this.terminate() }, "Terminate"),
    );
    this.panel = h("section", { class: "term-panel", role: "tabpanel", "aria-label": `Terminal ${label}` }, toolbar, this.screen);
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 13,
      scrollback: 5000,
      allowProposedApi: true,
      theme: document.documentElement.dataset.theme === "light" ? LIGHT : DARK,
    });
    this.term.loadAddon(this.fit);
    this.term.loadAddon(this.search);
    this.term.loadAddon(new WebLinksAddon());
    this.resizeObserver = new ResizeObserver(() => this.refit());
  }

  /** Puts the terminal on the page (once its panel is in the document) and starts the session. */
  async open(): Promise<void> {
    this.term.open(this.screen);
    try {
      const webgl = new WebglAddon();
      webgl.onContextLoss(() => webgl.dispose());
      this.term.loadAddon(webgl);
    } catch {
      // No WebGL (headless, old GPU, disabled): xterm's DOM renderer stays.
    }
    this.term.attachCustomKeyEventHandler((e) => this.keys(e));
    this.term.onData((d) => proto.input(d).forEach((m) => this.send(m)));
    this.term.onBinary((d) => proto.input(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)).forEach((m) => this.send(m)));
    this.term.onResize(({ cols, rows }) => this.send(proto.resize(cols, rows)));
    this.resizeObserver.observe(this.screen);
    this.refit();
    try {
      const r = await call<{ SessionId: string; TokenValue: string }>("StartSession", { Target: this.instanceId });
      this.sessionId = r.SessionId;
      this.connect(proto.hello(csrfToken(), r.TokenValue, this.term.cols, this.term.rows));
    } catch (e) {
      this.end(describe(e));
    }
  }

  /** The theme changed. */
  setTheme(light: boolean): void {
    this.term.options.theme = light ? LIGHT : DARK;
  }

  /** Fits the terminal to its panel (when visible). */
  refit(): void {
    if (this.screen.offsetParent === null) return;
    try {
      this.fit.fit();
    } catch {
      // Not laid out yet.
    }
  }

  /** Whether the session is over. */
  get ended(): boolean {
    return this.state === "ended";
  }

  /** The session id, once StartSession answered. */
  get session(): string {
    return this.sessionId;
  }

  /** Ends the session on purpose (the Terminate button, or the tab closed). */
  async terminate(): Promise<void> {
    if (this.state === "ended") return;
    this.ending = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(proto.terminate());
    } else if (this.sessionId) {
      await call("TerminateSession", { SessionId: this.sessionId }).catch(() => undefined);
    }
    this.end("Terminated.");
  }

  /** Closes the socket without ending the session (for the tests: a dropped connection). */
  dropSocket(): boolean {
    if (!this.ws) return false;
    this.ws.close(4000, "dropped");
    return true;
  }

  /** Frees the terminal. */
  dispose(): void {
    this.resizeObserver.disconnect();
    window.clearInterval(this.pinger);
    this.ws?.close(1000);
    this.term.dispose();
  }

  private keys(e: KeyboardEvent): boolean {
    if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey) return true;
    const k = e.key.toLowerCase();
    if (k === "c") {
      const sel = this.term.getSelection();
      if (sel) void navigator.clipboard?.writeText(sel).catch(() => undefined);
      return false;
    }
    if (k === "v") {
      void navigator.clipboard
        ?.readText()
        .then((t) => this.term.paste(t))
        .catch(() => undefined);
      return false;
    }
    if (k === "f") {
      this.searchBox.focus();
      this.searchBox.select();
      return false;
    }
    return true;
  }

  private setStatus(state: State, text: string): void {
    this.state = state;
    this.status.textContent = text;
    this.panel.dataset.state = state;
    this.onState(this);
  }

  private send(msg: Uint8Array): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === "connected") this.ws.send(msg);
  }

  private connect(first: Uint8Array): void {
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/console/api/terminal`;
    // The subprotocol names the protocol only: the tokens travel in the first message.
    const ws = new WebSocket(url, "airlock.terminal.v1");
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      ws.send(first);
    };
    ws.onmessage = (ev) => {
      if (ev.data instanceof ArrayBuffer) this.receive(ev.data);
    };
    ws.onclose = () => {
      window.clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.state === "ended" || this.ending) return;
      if (!this.wasReady) {
        // Never started: nothing to resume.
        this.end(opened ? "The session did not start." : "The terminal connection was refused.");
        return;
      }
      this.reconnectLater();
    };
  }

  private receive(buf: ArrayBuffer): void {
    const m = proto.decode(buf);
    if (!m) return;
    switch (m.kind) {
      case "ready":
        this.wasReady = true;
        this.sessionId = m.sessionId || this.sessionId;
        this.connected("Connected");
        break;
      case "resumed":
        this.connected("Resumed");
        break;
      case "output": {
        if (m.seq < this.outputNext) return; // resent: already on screen
        const next = m.seq + 1;
        this.outputNext = next;
        // Copy: the socket's buffer is reused once this handler returns.
        this.term.write(m.data.slice(), () => this.send(proto.ack(next)));
        break;
      }
      case "pong": {
        const rttUs = Math.max(0, performance.now() * 1000 - m.atUs);
        this.latency.textContent = `${(rttUs / 1000).toFixed(1)} ms`;
        break;
      }
      case "exit":
        this.end(`Exited with code ${m.code}.`);
        break;
      case "closed":
        this.end(m.message || "Closed.");
        break;
    }
  }

  private connected(text: string): void {
    this.retryMs = RETRY_FIRST_MS;
    this.attempts = 0;
    this.setStatus("connected", text);
    this.send(proto.resize(this.term.cols, this.term.rows));
    window.clearInterval(this.pinger);
    const probe = () => this.send(proto.ping(performance.now() * 1000));
    probe();
    this.pinger = window.setInterval(probe, PING_MS);
  }

  private reconnectLater(): void {
    this.setStatus("reconnecting", "Connection lost — resuming…");
    const wait = Math.random() * this.retryMs;
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    window.setTimeout(() => void this.resume(), wait);
  }

  private async resume(): Promise<void> {
    if (this.state !== "reconnecting") return;
    try {
      const r = await call<{ TokenValue: string }>("ResumeSession", { SessionId: this.sessionId });
      this.connect(proto.resume(csrfToken(), r.TokenValue, this.term.cols, this.term.rows, this.outputNext));
    } catch (e) {
      // Refused: the broker may not have noticed the drop yet (the session still shows
      // Connected), so a few tries; then the session is gone (ended, window passed) or not ours.
      this.attempts += 1;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || this.attempts >= MAX_REFUSED)) this.end(describe(e));
      else this.reconnectLater();
    }
  }

  private end(text: string): void {
    window.clearInterval(this.pinger);
    this.setStatus("ended", text);
    this.term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
  }
}

/** A refusal as the user should read it: the API's code and message. */
export function describe(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.code === "AccessDeniedException") return `Not allowed: ${e.message}`;
    return `${e.code}: ${e.message}`;
  }
  return e instanceof Error ? e.message : String(e);
}
